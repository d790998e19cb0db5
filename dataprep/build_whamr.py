"""WHAM! fixed mixtures from a simulated WHAMR! tree -> ``wham_max_16k.json`` (docs/corpora.md §6).

The noisy anechoic mixtures ``whamr/wav16k/max/{tr,cv,tt}/mix_both_anechoic/<f>`` with references
``s1_anechoic``, ``s2_anechoic`` and ``noise`` (same file names) become ``train``/``valid``/``test``.
"""

from __future__ import annotations

from pathlib import Path

from dataprep.common import DataprepError, Report, corpus_main, files, require_dir
from datasets.manifest import mixture_entry
from utils.audio import audio_info

SPLITS = (("train", "tr"), ("valid", "cv"), ("test", "tt"))
REFS = (("speech_1", "s1_anechoic"), ("speech_2", "s2_anechoic"), ("sfxbg_1", "noise"))
MIX_DIR = "mix_both_anechoic"
DATASET_NAME = "wham"


def build(corpus_dir: Path, sample_rate: int = 16000, min_or_max: str = "max") -> tuple[dict, Report]:
    """Manifest for ``corpus_dir`` (the WHAMR! folder holding ``wav8k``/``wav16k``)."""
    if sample_rate not in (8000, 16000):
        raise DataprepError(f"sample rate must be 8000 or 16000, got {sample_rate}")
    base = require_dir(Path(corpus_dir) / f"wav{sample_rate // 1000}k" / min_or_max, "simulated WHAMR! folder")
    report = Report("whamr")
    manifest: dict[str, dict] = {}
    for split, folder in SPLITS:
        mixes = files(require_dir(base / folder / MIX_DIR, f"WHAMR! {folder} mixtures"), "*.wav")
        manifest[split] = {}
        for mix in mixes:
            refs = {key: base / folder / ref_dir / mix.name for key, ref_dir in REFS}
            absent = [str(p) for p in refs.values() if not p.is_file()]
            if absent:
                report.add("mixtures with missing references (skipped)", absent[0])
                continue
            info = audio_info(mix)
            manifest[split][mix.name] = mixture_entry(refs, info.sample_rate, info.num_samples, DATASET_NAME, mix=mix)
        if not manifest[split]:
            raise DataprepError(f"no complete mixture found in {base / folder}")
        report.count(split, len(manifest[split]))
    return manifest, report


def main(argv: list[str] | None = None) -> int:
    return corpus_main(build, __doc__.splitlines()[0], "wham_max_16k.json", "whamr",
                       "simulated WHAMR! folder with metadata, wav8k, wav16k", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""Divide and Remaster v2 fixed mixtures -> ``dnr_44.1k.json`` (docs/corpora.md §10).

Each ``dnr_v2/{tr,cv,tt}/<id>/`` folder (``mix.wav``, ``speech.wav``, ``music.wav``, ``sfx.wav``; 60 s) becomes one
mixture with references ``speech_1``, ``musicbg_1`` and ``sfxbg_1``.
"""

from __future__ import annotations

from pathlib import Path

from dataprep.common import DataprepError, Report, corpus_main, require_dir, subdirs
from datasets.manifest import mixture_entry
from utils.audio import audio_info

SPLITS = (("train", "tr"), ("valid", "cv"), ("test", "tt"))
REFS = (("speech_1", "speech.wav"), ("musicbg_1", "music.wav"), ("sfxbg_1", "sfx.wav"))
MIXTURE_SECONDS = 60
DATASET_NAME = "dnr"  # switches on chunk-wise (CSS) inference


def build(corpus_dir: Path) -> tuple[dict, Report]:
    """Manifest for ``corpus_dir`` (the ``dnr_v2`` folder)."""
    corpus_dir = require_dir(Path(corpus_dir), "DnR v2 folder")
    report = Report("dnr")
    manifest: dict[str, dict] = {}
    for split, folder in SPLITS:
        manifest[split] = {}
        for item in subdirs(require_dir(corpus_dir / folder, f"DnR {folder} folder")):
            paths = [item / "mix.wav", *(item / name for _, name in REFS)]
            absent = [p.name for p in paths if not p.is_file()]
            if absent:
                report.add("folders with missing files (skipped)", f"{item} ({', '.join(absent)})")
                continue
            info = audio_info(item / "mix.wav")
            # The release asserts 60 s mixtures; here a different length is reported and the mixture kept.
            if info.num_samples != MIXTURE_SECONDS * info.sample_rate:
                report.add("mixtures that are not 60 s long", item.name)
            refs = {key: item / name for key, name in REFS}
            manifest[split][item.name] = mixture_entry(refs, info.sample_rate, info.num_samples, DATASET_NAME,
                                                       mix=item / "mix.wav")
        if not manifest[split]:
            raise DataprepError(f"no complete mixture folder found in {corpus_dir / folder}")
        report.count(split, len(manifest[split]))
    return manifest, report


def main(argv: list[str] | None = None) -> int:
    return corpus_main(build, __doc__.splitlines()[0], "dnr_44.1k.json", "dnr/dnr_v2",
                       "DnR v2 folder holding tr, cv, tt", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())

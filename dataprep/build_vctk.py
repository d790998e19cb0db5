"""VCTK 0.92 speech pool -> ``vctk_48k.json`` (docs/corpora.md §1).

Every ``wav48_silence_trimmed/<spk>/<spk>_<utt>_mic1.flac`` goes to ``train/speech``, except the four speakers of
the VCTK-DEMAND validation (p226, p287) and test (p232, p257) sets; ``_mic2`` files are ignored.
"""

from __future__ import annotations

from pathlib import Path

from dataprep.common import (
    DataprepError,
    Report,
    corpus_main,
    empty_splits,
    files,
    require_dir,
    subdirs,
)
from datasets.manifest import pool_entry
from utils.audio import audio_info

HELD_OUT_SPEAKERS = frozenset({"p226", "p287", "p232", "p257"})
DATASET_NAME = "vctk_speech"


def build(corpus_dir: Path) -> tuple[dict, Report]:
    """Manifest for ``corpus_dir`` (the folder holding ``wav48_silence_trimmed``)."""
    wav_dir = require_dir(Path(corpus_dir) / "wav48_silence_trimmed", "VCTK 0.92 audio folder")
    report = Report("vctk_speech")
    entries = []
    for spk in subdirs(wav_dir):
        if spk.name in HELD_OUT_SPEAKERS:
            report.add("held-out speakers skipped", spk.name)
            continue
        flacs = files(spk, "*_mic1.flac")
        if not flacs:
            report.add("speaker folders without *_mic1.flac files", spk)
        for f in flacs:
            info = audio_info(f)
            entries.append(pool_entry(f, info.sample_rate, info.num_samples, DATASET_NAME))
        report.count("speakers", bool(flacs))
    for f in files(wav_dir):
        report.add("unexpected files beside the speaker folders", f.name)
    if not entries:
        raise DataprepError(f"no *_mic1.flac file found under {wav_dir}/<speaker>/")
    manifest = empty_splits()
    manifest["train"] = {"speech": entries}
    report.count("utterances", len(entries))
    return manifest, report


def main(argv: list[str] | None = None) -> int:
    return corpus_main(build, __doc__.splitlines()[0], "vctk_48k.json", "vctk/VCTK-Corpus",
                       "folder holding wav48_silence_trimmed", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""WHAM! 48 kHz noise pool -> ``wham_noise_48k.json`` (docs/corpora.md §5).

Rows of ``high_res_wham/high_res_metadata.csv`` whose ``WHAM! Split`` is ``Train`` are cut into 8 s windows with a
4 s hop, written to ``high_res_wham/high_res_wham_segment/<file stem>/<iii>.wav`` and listed in ``train/sfxbg``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from dataprep.common import (
    DataprepError,
    Report,
    corpus_main,
    files,
    require_dir,
    require_file,
    window_pool,
)

DATASET_NAME = "wham_noise"


def train_files(metadata: Path) -> list[str]:
    """Base names of the ``Train`` rows of the metadata CSV, in file order.

    Parsed with :mod:`csv`; the release splits lines on plain commas, which would shift the columns of a row with
    a quoted comma.
    """
    with open(require_file(metadata, "WHAM! 48 kHz metadata"), newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f)
        missing = {"Filename", "WHAM! Split"} - set(rows.fieldnames or ())
        if missing:
            raise DataprepError(f"{metadata}: column(s) {', '.join(sorted(missing))} not found in the header")
        return [Path(row["Filename"]).name for row in rows if row["WHAM! Split"] == "Train"]


def build(corpus_dir: Path, jobs: int = 1) -> tuple[dict, Report]:
    """Manifest for ``corpus_dir`` (the folder holding ``high_res_metadata.csv`` and ``audio/``)."""
    corpus_dir = Path(corpus_dir)
    audio_dir = require_dir(corpus_dir / "audio", "WHAM! 48 kHz audio folder")
    report = Report("wham_noise")
    names = train_files(corpus_dir / "high_res_metadata.csv")
    segment_dir = corpus_dir / "high_res_wham_segment"
    jobs_list = []
    for name in names:
        if (audio_dir / name).is_file():
            jobs_list.append((audio_dir / name, segment_dir / Path(name).stem, "{i:03d}.wav"))
        else:
            report.add("Train files of the metadata missing from audio/", name)
    listed = set(names)
    report.count("audio files not in the Train split", sum(f.name not in listed for f in files(audio_dir)))
    if not jobs_list:
        raise DataprepError(f"no Train file of {corpus_dir / 'high_res_metadata.csv'} found in {audio_dir}")
    return window_pool(jobs_list, jobs, report, DATASET_NAME, "recordings"), report


def main(argv: list[str] | None = None) -> int:
    return corpus_main(build, __doc__.splitlines()[0], "wham_noise_48k.json", "wham_noise_48k/high_res_wham",
                       "folder holding high_res_metadata.csv and audio/", jobs=True, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())

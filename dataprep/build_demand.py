"""DEMAND noise pool -> ``demand_48k.json`` (docs/corpora.md §2).

``demand/<TYPE>/ch01.wav`` of the 13 types that are not Voicebank-DEMAND test noises is cut into 8 s windows with a
4 s hop, written to ``demand/demand_48k_segment/<TYPE>_<iii>.wav`` and listed in ``train/sfxbg``.
"""

from __future__ import annotations

from pathlib import Path

from dataprep.common import (
    DataprepError,
    Report,
    corpus_main,
    require_dir,
    subdirs,
    window_pool,
)

TEST_NOISES = frozenset({"DLIVING", "OOFFICE", "TBUS", "PCAFETER", "SPSQUARE"})
ALL_TYPES = ("DKITCHEN", "DLIVING", "DWASHING", "NFIELD", "NPARK", "NRIVER", "OHALLWAY", "OMEETING", "OOFFICE",
             "PCAFETER", "PRESTO", "PSTATION", "SCAFE", "SPSQUARE", "STRAFFIC", "TBUS", "TCAR", "TMETRO")
NOT_TYPES = frozenset({"zip_files", "demand_48k_segment"})
# The release labels these entries "vctk_demand", not "demand"; kept as published (nothing depends on it).
DATASET_NAME = "vctk_demand"


def build(corpus_dir: Path, jobs: int = 1) -> tuple[dict, Report]:
    """Cut the training noise types of ``corpus_dir`` (the ``demand`` folder) and list the windows."""
    corpus_dir = require_dir(Path(corpus_dir), "DEMAND folder")
    report = Report("demand_noise")
    segment_dir = corpus_dir / "demand_48k_segment"
    jobs_list = []
    for folder in subdirs(corpus_dir):
        if folder.name in NOT_TYPES:
            continue
        # The release treats every other entry as a noise type; here a folder without ch01.wav is reported instead.
        if not (folder / "ch01.wav").is_file():
            report.add("folders without ch01.wav (ignored)", folder.name)
            continue
        if folder.name not in ALL_TYPES:
            report.add("unknown noise types (used for training)", folder.name)
        if folder.name in TEST_NOISES:
            report.add("test noise types held out", folder.name)
            continue
        jobs_list.append((folder / "ch01.wav", segment_dir, folder.name + "_{i:03d}.wav"))
    found = {job[0].parent.name for job in jobs_list} | (TEST_NOISES & {p.name for p in subdirs(corpus_dir)})
    for name in ALL_TYPES:
        if name not in found:
            report.add("noise types missing", name)
    if not jobs_list:
        raise DataprepError(f"no <TYPE>/ch01.wav found under {corpus_dir}")
    return window_pool(jobs_list, jobs, report, DATASET_NAME, "types"), report


def main(argv: list[str] | None = None) -> int:
    return corpus_main(build, __doc__.splitlines()[0], "demand_48k.json", "demand",
                       "DEMAND folder", jobs=True, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())

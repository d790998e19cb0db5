"""MUSDB18-HQ fixed mixtures -> ``musdb18hq_44.1k.json`` (docs/corpora.md §12).

``musdb18/musdbhq/{train,test}/<Artist - Title>/`` (``mixture.wav`` and the four stems). ``valid`` is 14 songs of
the ``train`` folder, ``train`` the rest, ``test`` the ``test`` folder. The SAD pool of
``musdb18hq_44.1k_sad.json`` is made from this file by :mod:`dataprep.sad` (``--min_power 1e-5 --min_thres 1e-3``).
"""

from __future__ import annotations

from pathlib import Path

from dataprep.common import DataprepError, Report, corpus_main, require_dir, subdirs
from datasets.manifest import mixture_entry
from utils.audio import audio_info

VALID_SONGS = (
    "Actions - One Minute Smile",
    "Clara Berry And Wooldog - Waltz For My Victims",
    "Johnny Lokke - Promises & Lies",
    "Patrick Talbot - A Reason To Leave",
    "Triviul - Angelsaint",
    "Alexander Ross - Goodbye Bolero",
    "Fergessen - Nos Palpitants",
    "Leaf - Summerghost",
    "Skelpolu - Human Mistakes",
    "Young Griffo - Pennies",
    "ANiMAL - Rockshow",
    "James May - On The Line",
    "Meaxic - Take A Step",
    "Traffic Experiment - Sirens",
)
STEMS = ("drums", "bass", "vocals", "other")
DATASET_NAME = "musdb18hq"  # switches on chunk-wise (CSS) inference


def song_entry(song: Path, report: Report) -> dict | None:
    """Mixture entry of one song folder, or None (reported) when a file is missing."""
    paths = [song / "mixture.wav", *(song / f"{s}.wav" for s in STEMS)]
    absent = [p.name for p in paths if not p.is_file()]
    if absent:
        report.add("song folders with missing files (skipped)", f"{song.name} ({', '.join(absent)})")
        return None
    info = audio_info(song / "mixture.wav")
    refs = {f"{s}_1": song / f"{s}.wav" for s in STEMS}
    return mixture_entry(refs, info.sample_rate, info.num_samples, DATASET_NAME, mix=song / "mixture.wav")


def build(corpus_dir: Path) -> tuple[dict, Report]:
    """Manifest for ``corpus_dir`` (``musdb18/musdbhq``, holding ``train`` and ``test``)."""
    corpus_dir = Path(corpus_dir)
    report = Report("musdb")
    manifest: dict[str, dict] = {"train": {}, "valid": {}, "test": {}}
    train_songs = subdirs(require_dir(corpus_dir / "train", "MUSDB18-HQ train folder"))
    names = {s.name for s in train_songs}
    for name in VALID_SONGS:
        if name not in names:
            report.add("validation songs missing from train/", name)
    for song in train_songs:
        entry = song_entry(song, report)
        if entry is not None:
            manifest["valid" if song.name in VALID_SONGS else "train"][song.name] = entry
    for song in subdirs(require_dir(corpus_dir / "test", "MUSDB18-HQ test folder")):
        entry = song_entry(song, report)
        if entry is not None:
            manifest["test"][song.name] = entry
    for split, expected in (("train", 86), ("valid", 14), ("test", 50)):
        report.count(split, len(manifest[split]))
        if len(manifest[split]) != expected:
            report.add(f"splits whose song count differs from the published {expected}",
                       f"{split}: {len(manifest[split])}")
    if not manifest["train"]:
        raise DataprepError(f"no complete training song found in {corpus_dir / 'train'}")
    return manifest, report


def main(argv: list[str] | None = None) -> int:
    return corpus_main(build, __doc__.splitlines()[0], "musdb18hq_44.1k.json", "musdb18/musdbhq",
                       "folder holding train and test", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())

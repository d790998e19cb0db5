"""MoisesDB songs -> ``moisesdb_44.1k.json`` (docs/corpora.md §13).

Songs ``moisesdb_v0.1/<uuid>/`` are split by the query-bandit ``splits.csv`` (folds 1-3 train, 4 valid, 5 test).
Every track of every stem is its own reference: stems named bass, drums, vocals, other keep their name and **every
other stem (guitar, piano, percussion, …) becomes ``other``**; references are numbered per prompt in ``data.json``
order, keys ordered bass, drums, other, vocals. Entries have no ``mix`` (the loader sums the references). The SAD
pool of ``moisesdb_44.1k_sad.json`` is made from this file by :mod:`dataprep.sad`
(``--min_power 1e-7 --min_thres 1e-5``).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from dataprep.common import DataprepError, Report, base_parser, require_dir, require_file, run_builder, subdirs
from datasets.manifest import mixture_entry
from utils.audio import audio_info

FOLD_TO_SPLIT = {"1": "train", "2": "train", "3": "train", "4": "valid", "5": "test"}
PROMPTS = ("bass", "drums", "other", "vocals")  # reference key order
DATASET_NAME = "moisesdb"


def read_splits(csv_path: Path) -> dict[str, str]:
    """``{song uuid: split}`` from ``splits.csv`` (columns ``song_id`` and ``split`` = fold 1-5)."""
    with open(require_file(csv_path, "MoisesDB split file"), newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f)
        if not {"song_id", "split"} <= set(rows.fieldnames or ()):
            raise DataprepError(f"{csv_path}: expected the columns song_id and split, got {rows.fieldnames}")
        out = {}
        for row in rows:
            fold = row["split"].strip()
            if fold not in FOLD_TO_SPLIT:
                raise DataprepError(f"{csv_path}: song {row['song_id']} has fold {fold!r}, expected 1 to 5")
            out[row["song_id"].strip()] = FOLD_TO_SPLIT[fold]
        return out


def song_entry(song: Path, report: Report) -> dict:
    """Entry of one song folder from its ``data.json``."""
    meta = json.loads(require_file(song / "data.json", "MoisesDB song metadata").read_text(encoding="utf-8"))
    refs: dict[str, list[Path]] = {p: [] for p in PROMPTS}
    for stem in meta.get("stems", []):
        prompt = stem["stemName"] if stem["stemName"] in PROMPTS else "other"
        for track in stem.get("tracks", []):
            # The release hard-codes ".wav"; the track's own extension field is used when present.
            refs[prompt].append(song / stem["stemName"] / f"{track['id']}.{track.get('extension', 'wav')}")
    ordered = {f"{p}_{k}": path for p in PROMPTS for k, path in enumerate(refs[p], 1)}
    if not ordered:
        raise DataprepError(f"{song / 'data.json'} lists no track")
    absent = [str(p) for p in ordered.values() if not p.is_file()]
    if absent:
        raise DataprepError(f"{song.name}: track file(s) listed in data.json not found: {', '.join(absent[:3])}")
    infos = {(i.sample_rate, i.num_samples) for i in map(audio_info, ordered.values())}
    if len(infos) > 1:  # the release takes the last track's values without looking at the others
        report.add("songs whose tracks differ in rate or length (last track's values used)", song.name)
    info = audio_info(list(ordered.values())[-1])
    return mixture_entry(ordered, info.sample_rate, info.num_samples, DATASET_NAME)


def build(corpus_dir: Path, split_csv: Path) -> tuple[dict, Report]:
    """Manifest for ``corpus_dir`` (``moisesdb/moisesdb/moisesdb_v0.1``) split by ``split_csv``."""
    corpus_dir = require_dir(Path(corpus_dir), "MoisesDB folder (moisesdb_v0.1)")
    report = Report("moisesdb")
    splits = read_splits(Path(split_csv))
    missing = [song for song in splits if not (corpus_dir / song).is_dir()]
    if missing:
        raise DataprepError(f"{len(missing)} song(s) of {split_csv} not found in {corpus_dir}, e.g. {missing[0]}")
    for song in subdirs(corpus_dir):
        if song.name not in splits:
            report.add("song folders not in the split file (ignored)", song.name)
    manifest: dict[str, dict] = {"train": {}, "valid": {}, "test": {}}
    for song, split in splits.items():
        manifest[split][song] = song_entry(corpus_dir / song, report)
    for split in manifest:
        report.count(split, len(manifest[split]))
    return manifest, report


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], "moisesdb_44.1k.json")
    parser.add_argument("--corpus_dir", type=Path, default=Path("moisesdb/moisesdb/moisesdb_v0.1"),
                        help="folder of the song folders (default moisesdb/moisesdb/moisesdb_v0.1)")
    parser.add_argument("--split_csv", type=Path, default=Path("moisesdb/moisesdb_split.csv"),
                        help="query-bandit splits.csv (default moisesdb/moisesdb_split.csv)")

    def _build(args: argparse.Namespace):
        manifest, report = build(args.corpus_dir, args.split_csv)
        return {args.output: manifest}, report

    return run_builder(_build, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())

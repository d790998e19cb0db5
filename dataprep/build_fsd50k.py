"""FSD50K sound-event pool -> ``fsd50k_44.1k.json`` (docs/corpora.md §8).

From the dev set only: clips labelled with human voice, respiratory sounds, human group actions or music (any node
of those AudioSet subtrees) are dropped; the rest go to ``train`` or ``valid`` (ground-truth ``split``) as

============  ===============  ============
group         duration < 8 s   >= 8 s
single-label  ``sfx``          ``sfxbg``
multi-label   dropped          ``sfxbg`` (after the single-label ones)
============  ===============  ============

where single-label means one (or no) label in the collection metadata. ``test`` is empty.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from dataprep.common import DataprepError, Report, base_parser, require_dir, require_file, run_builder
from datasets.manifest import pool_entry
from utils.audio import audio_info

EXCLUDED_ROOTS = (
    "/m/09l8g",  # Human voice
    "/m/09hlz4",  # Respiratory sounds
    "/t/dd00012",  # Human group actions
    "/m/04rlf",  # Music
)
FOREGROUND_SECONDS = 8.0
SPLIT_NAMES = {"train": "train", "val": "valid"}
DATASET_NAME = "fsd50k"


def excluded_ids(ontology_json: Path) -> frozenset[str]:
    """The four excluded nodes and all their descendants (through ``child_ids``).

    The release excludes only the descendants, so a clip labelled with just ``Music`` (or another root) is kept;
    the roots are excluded here too.
    """
    nodes = json.loads(require_file(ontology_json, "AudioSet ontology").read_text(encoding="utf-8"))
    children = {node["id"]: node.get("child_ids", []) for node in nodes}
    unknown = [root for root in EXCLUDED_ROOTS if root not in children]
    if unknown:
        raise DataprepError(f"{ontology_json} has no node {', '.join(unknown)}: not the AudioSet ontology?")
    found: set[str] = set()
    stack = list(EXCLUDED_ROOTS)
    while stack:
        node = stack.pop()
        if node not in found:
            found.add(node)
            stack.extend(children.get(node, []))
    return frozenset(found)


def _read_csv(path: Path, columns: set[str], what: str) -> list[dict[str, str]]:
    with open(require_file(path, what), newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f)
        if not columns <= set(rows.fieldnames or ()):
            raise DataprepError(f"{path}: expected the columns {', '.join(sorted(columns))}, got {rows.fieldnames}")
        return list(rows)


def build(corpus_dir: Path, ontology_json: Path) -> tuple[dict, Report]:
    """Manifest for ``corpus_dir`` (the ``fsd50k`` folder with ``FSD50K.dev_audio``, ``FSD50K.ground_truth`` and
    ``FSD50K.metadata``)."""
    corpus_dir = Path(corpus_dir)
    audio_dir = require_dir(corpus_dir / "FSD50K.dev_audio", "FSD50K dev audio folder")
    truth = _read_csv(corpus_dir / "FSD50K.ground_truth" / "dev.csv", {"fname", "labels", "mids", "split"},
                      "FSD50K dev ground truth")
    collection = _read_csv(corpus_dir / "FSD50K.metadata" / "collection" / "collection_dev.csv",
                           {"fname", "labels"}, "FSD50K dev collection metadata")
    # Joined on fname (the release pairs the two tables by row position, assuming they share order).
    collected = {row["fname"]: row["labels"] for row in collection}
    excluded = excluded_ids(Path(ontology_json))
    report = Report("fsd50k")
    pools = {split: {"sfx": [], "sfxbg": [], "multi": []} for split in SPLIT_NAMES.values()}
    for row in truth:
        if row["split"] not in SPLIT_NAMES:
            report.add("rows with an unknown split (skipped)", f"{row['fname']}: {row['split']!r}")
            continue
        if row["fname"] not in collected:
            report.add("clips missing from the collection metadata (skipped)", row["fname"])
            continue
        if excluded & set(row["mids"].split(",")):
            report.count("speech/music clips dropped", 1)
            continue
        path = audio_dir / f"{row['fname']}.wav"
        if not path.is_file():
            report.add("clips missing from FSD50K.dev_audio", path.name)
            continue
        single = len(collected[row["fname"]].split(",")) == 1  # an empty label also counts as one
        info = audio_info(path)
        background = info.num_samples / info.sample_rate >= FOREGROUND_SECONDS
        if not single and not background:
            report.count("short multi-label clips dropped", 1)
            continue
        entry = pool_entry(path, info.sample_rate, info.num_samples, DATASET_NAME, labels=row["labels"],
                           mids=row["mids"])
        pools[SPLIT_NAMES[row["split"]]]["sfxbg" if background and single else "multi" if background else "sfx"
                                         ].append(entry)
    manifest: dict[str, dict] = {}
    for split, pool in pools.items():
        manifest[split] = {"sfx": pool["sfx"], "sfxbg": pool["sfxbg"] + pool["multi"]}
        report.count(f"{split} sfx", len(pool["sfx"]))
        report.count(f"{split} sfxbg", len(pool["sfxbg"]) + len(pool["multi"]))
    if not any(manifest["train"].values()):
        raise DataprepError(f"no usable training clip found under {corpus_dir}")
    manifest["test"] = {}
    return manifest, report


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], "fsd50k_44.1k.json")
    parser.add_argument("--corpus_dir", type=Path, default=Path("fsd50k"),
                        help="folder holding the FSD50K.* folders (default fsd50k)")
    parser.add_argument("--ontology", type=Path, default=Path("dataprep/datafiles/ontology/ontology.json"),
                        help="AudioSet ontology.json")

    def _build(args: argparse.Namespace):
        manifest, report = build(args.corpus_dir, args.ontology)
        return {args.output: manifest}, report

    return run_builder(_build, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())

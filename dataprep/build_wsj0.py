"""WSJ0 speech pool -> ``wsj0_speech_16k.json`` (docs/corpora.md §4).

The pool is the unique utterances named in MERL's ``mix_2_spk_tr.txt`` (fields 1 and 3 of each line, e.g.
``wsj0/si_tr_s/01t/01to030v.wav``), looked up in the converted WAV tree ``wsj/wsj0_wav/<LDC disc>/wsj0/...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dataprep.common import DataprepError, Report, base_parser, empty_splits, require_dir, require_file, run_builder
from datasets.manifest import pool_entry
from utils.audio import audio_info

DATASET_NAME = "wsj0"


def read_list(list_file: Path) -> list[str]:
    """Unique utterance paths of a wsj0-2mix list (``path1 snr1 path2 snr2`` per line), in first-seen order.

    The release de-duplicates through a ``set``, so its entry order changes between runs; first-seen order is
    deterministic and gives the same pool.
    """
    paths: dict[str, None] = {}
    for number, line in enumerate(require_file(list_file, "wsj0-2mix list").read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 4:
            raise DataprepError(f"{list_file}:{number}: expected 'path1 snr1 path2 snr2', got {line!r}")
        paths.setdefault(fields[0])
        paths.setdefault(fields[2])
    return list(paths)


def index_discs(wav_dir: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """Map ``wsj0/si_tr_s/<spk>/<utt>.wav`` (lower case) to the converted files of every disc that has it.

    Only discs with ``wsj0/si_tr_s`` are scanned, as in the release; matching ignores case because LDC copies
    differ in the case of their file names.
    """
    index: dict[str, list[Path]] = {}
    discs = [d.name for d in sorted(wav_dir.iterdir()) if (d / "wsj0" / "si_tr_s").is_dir()]
    for disc in discs:
        for f in sorted((wav_dir / disc / "wsj0" / "si_tr_s").rglob("*")):
            if f.suffix.lower() == ".wav" and f.is_file():
                index.setdefault(f.relative_to(wav_dir / disc).as_posix().lower(), []).append(f)
    return index, discs


def build(wav_dir: Path, list_file: Path) -> tuple[dict, Report]:
    """Manifest from the converted tree ``wav_dir`` (``wsj/wsj0_wav``) and ``mix_2_spk_tr.txt``."""
    wav_dir = require_dir(Path(wav_dir), "converted WSJ0 folder")
    report = Report("wsj0_speech")
    index, discs = index_discs(wav_dir)
    if not discs:
        raise DataprepError(f"no LDC disc folder with wsj0/si_tr_s found under {wav_dir}")
    entries = []
    for rel in read_list(Path(list_file)):
        found = index.get(rel.lower(), [])
        if not found:
            report.add("listed utterances missing from the converted tree", rel)
            continue
        if len(found) > 1:  # the release silently keeps the last disc scanned; here the first, and it is reported
            report.add("utterances found on several discs (first disc used)", rel)
        info = audio_info(found[0])
        entries.append(pool_entry(found[0], info.sample_rate, info.num_samples, DATASET_NAME))
    if not entries:
        raise DataprepError(f"none of the utterances of {list_file} was found under {wav_dir}/<disc>/")
    report.count("discs", len(discs))
    report.count("utterances", len(entries))
    manifest = empty_splits()
    manifest["train"] = {"speech": entries}
    return manifest, report


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], "wsj0_speech_16k.json")
    parser.add_argument("--wav_dir", type=Path, default=Path("wsj/wsj0_wav"),
                        help="converted WSJ0 tree holding the LDC disc folders (default wsj/wsj0_wav)")
    parser.add_argument("--list", type=Path,
                        default=Path("dataprep/datafiles/create-speaker-mixtures/mix_2_spk_tr.txt"),
                        help="wsj0-2mix training list (mix_2_spk_tr.txt)")

    def _build(args: argparse.Namespace):
        manifest, report = build(args.wav_dir, args.list)
        return {args.output: manifest}, report

    return run_builder(_build, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())

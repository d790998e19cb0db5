"""Data manifests (docs/architecture.md §9, docs/corpora.md §0): building entries, writing, loading and validating them.

A manifest is a JSON object ``{"train": …, "valid": …, "test": …}`` (any subset of the three; an unused split is
``{}``). Each split has one of two shapes:

- **pool** (source pool for dynamic mixing): ``{prompt: [{"path", "sample_rate", "num_samples", [extra keys…],
  "dataset_name"}, …]}``;
- **mixtures** (fixed mixtures for validation/test): ``{id: {["mix",] "ref": {"<prompt>_<k>": path}, "sample_rate",
  "num_samples", "dataset_name"}}``. The prompt of a reference is its key before the first ``_``.

The ``*_sad.json`` manifests mix both: a pool ``train`` and mixture ``valid``/``test``. Relative paths are relative to
the repository root, where training runs.

Command line::

    python -m datasets.manifest check datasets/json_files/vctk_48k.json [more.json …] [--prompts piano …]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.atomic import write_text

__all__ = [
    "STANDARD_PROMPTS", "known_prompts", "SPLITS", "ManifestError", "Manifest", "ManifestReport", "PromptStats",
    "pool_entry", "mixture_entry", "ref_prompt", "split_shape", "check_structure", "load_manifest", "write_manifest",
    "validate_manifest", "main",
]

STANDARD_PROMPTS: tuple[str, ...] = ("speech", "sfx", "sfxbg", "drums", "bass", "vocals", "other", "musicbg")


def known_prompts(*extra: Iterable[str]) -> tuple[str, ...]:
    """The 8 standard prompts followed by any others in ``extra`` (a model's, a config's), each once, in order.

    >>> known_prompts(["speech", "piano"])
    ('speech', 'sfx', 'sfxbg', 'drums', 'bass', 'vocals', 'other', 'musicbg', 'piano')
    """
    return tuple(dict.fromkeys([*STANDARD_PROMPTS, *(p for names in extra for p in names)]))
SPLITS: tuple[str, ...] = ("train", "valid", "test")
POOL_KEYS: tuple[str, ...] = ("path", "sample_rate", "num_samples", "dataset_name")
MIXTURE_KEYS: tuple[str, ...] = ("ref", "sample_rate", "num_samples", "dataset_name")  # plus an optional "mix"
_REF_KEY = re.compile(r"^([^_]+)_([1-9][0-9]*)$")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file (or the entry) and what was expected."""


# ----------------------------------------------------------------------------------------------------------------
# building entries


def _as_path_str(path: str | os.PathLike) -> str:
    return Path(path).as_posix()


def pool_entry(
    path: str | os.PathLike, sample_rate: int, num_samples: int, dataset_name: str, **extra: Any
) -> dict[str, Any]:
    """One source-pool entry with the keys in the published order; ``extra`` keys (e.g. FSD50K ``labels``,
    ``mids``) go between ``num_samples`` and ``dataset_name``."""
    entry: dict[str, Any] = {"path": _as_path_str(path), "sample_rate": int(sample_rate),
                             "num_samples": int(num_samples)}
    entry.update(extra)
    entry["dataset_name"] = dataset_name
    return entry


def mixture_entry(
    refs: dict[str, str | os.PathLike],
    sample_rate: int,
    num_samples: int,
    dataset_name: str,
    mix: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """One fixed-mixture entry (``mix`` first when given, then ``ref`` in the given key order)."""
    entry: dict[str, Any] = {} if mix is None else {"mix": _as_path_str(mix)}
    entry["ref"] = {key: _as_path_str(p) for key, p in refs.items()}
    entry.update(sample_rate=int(sample_rate), num_samples=int(num_samples), dataset_name=dataset_name)
    return entry


def ref_prompt(key: str) -> str:
    """Prompt of a reference key: the part before the first ``_`` (``"speech_2"`` -> ``"speech"``)."""
    return key.split("_", 1)[0]


# ----------------------------------------------------------------------------------------------------------------
# shapes and structure


def split_shape(split: Any) -> str:
    """``"empty"``, ``"pool"`` (all values are lists) or ``"mixtures"`` (all values are objects).

    Raises:
        ManifestError: the split is not an object, or mixes lists and objects.
    """
    if not isinstance(split, dict):
        raise ManifestError(f"a split must be a JSON object, got {type(split).__name__}")
    if not split:
        return "empty"
    if all(isinstance(v, list) for v in split.values()):
        return "pool"
    if all(isinstance(v, dict) for v in split.values()):
        return "mixtures"
    raise ManifestError("a split must map prompts to lists (source pool) or ids to objects (fixed mixtures), "
                        "not a mix of both")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_common(where: str, entry: dict, problems: list[str]) -> None:
    if not _is_count(entry.get("sample_rate")):
        problems.append(f"{where}: 'sample_rate' must be a positive integer, got {entry.get('sample_rate')!r}")
    if not _is_count(entry.get("num_samples")):
        problems.append(f"{where}: 'num_samples' must be a positive integer, got {entry.get('num_samples')!r}")
    if not isinstance(entry.get("dataset_name"), str) or not entry.get("dataset_name"):
        problems.append(f"{where}: 'dataset_name' must be a non-empty string, got {entry.get('dataset_name')!r}")


def _check_pool(name: str, split: dict, prompts: frozenset[str], problems: list[str]) -> None:
    for prompt, entries in split.items():
        if prompt not in prompts:
            problems.append(f"{name}: unknown prompt {prompt!r} (known: {', '.join(sorted(prompts))}; "
                            "use --prompts to add more)")
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            where = f"{name}/{prompt}[{i}]"
            if not isinstance(entry, dict):
                problems.append(f"{where}: entry must be an object, got {type(entry).__name__}")
                continue
            missing = [k for k in POOL_KEYS if k not in entry]
            if missing:
                problems.append(f"{where}: missing key(s) {', '.join(missing)} (a pool entry has "
                                f"{', '.join(POOL_KEYS)})")
                continue
            if not isinstance(entry["path"], str) or not entry["path"]:
                problems.append(f"{where}: 'path' must be a non-empty string, got {entry['path']!r}")
            elif entry["path"] in seen:
                problems.append(f"{where}: duplicate path {entry['path']} in the same pool")
            else:
                seen.add(entry["path"])
            _check_common(where, entry, problems)


def _check_mixtures(name: str, split: dict, prompts: frozenset[str], problems: list[str]) -> None:
    for item_id, entry in split.items():
        where = f"{name}/{item_id}"
        missing = [k for k in MIXTURE_KEYS if k not in entry]
        if missing:
            problems.append(f"{where}: missing key(s) {', '.join(missing)} (a mixture entry has [mix,] "
                            f"{', '.join(MIXTURE_KEYS)})")
            continue
        if "mix" in entry and (not isinstance(entry["mix"], str) or not entry["mix"]):
            problems.append(f"{where}: 'mix' must be a non-empty string, got {entry['mix']!r}")
        refs = entry["ref"]
        if not isinstance(refs, dict) or not refs:
            problems.append(f"{where}: 'ref' must be a non-empty object {{'<prompt>_<k>': path}}, got {refs!r}")
        else:
            for key, path in refs.items():
                match = _REF_KEY.match(key)
                if match is None:
                    problems.append(f"{where}: reference key {key!r} is not '<prompt>_<k>' (k = 1, 2, …)")
                elif match.group(1) not in prompts:
                    problems.append(f"{where}: unknown prompt {match.group(1)!r} in reference {key!r} (known: "
                                    f"{', '.join(sorted(prompts))}; use --prompts to add more)")
                if not isinstance(path, str) or not path:
                    problems.append(f"{where}: reference {key!r} must be a non-empty path string, got {path!r}")
        _check_common(where, entry, problems)


def check_structure(data: Any, prompts: Iterable[str] = STANDARD_PROMPTS) -> tuple[dict[str, str], list[str]]:
    """Check the JSON structure of a manifest (no file access).

    Returns:
        ``(shapes, problems)``: the shape of each split present (``"pool"``, ``"mixtures"`` or ``"empty"``) and a
        list of one-line problems (empty when the structure is valid).
    """
    prompts = frozenset(prompts)
    problems: list[str] = []
    shapes: dict[str, str] = {}
    if not isinstance(data, dict):
        return shapes, [f"top level must be an object with keys {', '.join(SPLITS)}, got {type(data).__name__}"]
    unknown = [k for k in data if k not in SPLITS]
    if unknown:
        problems.append(f"unknown top-level key(s) {', '.join(map(repr, unknown))} (expected {', '.join(SPLITS)})")
    if not any(k in data for k in SPLITS):
        problems.append(f"no split found (expected keys {', '.join(SPLITS)})")
    for name in SPLITS:
        if name not in data:
            continue
        try:
            shapes[name] = split_shape(data[name])
        except ManifestError as err:
            problems.append(f"{name}: {err}")
            continue
        if shapes[name] == "pool":
            _check_pool(name, data[name], prompts, problems)
        elif shapes[name] == "mixtures":
            _check_mixtures(name, data[name], prompts, problems)
    return shapes, problems


# ----------------------------------------------------------------------------------------------------------------
# loading and writing


@dataclass
class Manifest:
    """A loaded manifest: ``data`` as in the file and the shape of each split present."""

    path: Path
    data: dict[str, dict]
    shapes: dict[str, str]

    @property
    def shape(self) -> str:
        """``"pool"`` or ``"mixtures"`` when every non-empty split has that shape, ``"mixed"`` for the ``*_sad``
        manifests (pool train, mixture valid/test), ``"empty"`` when no split has entries."""
        found = {s for s in self.shapes.values() if s != "empty"}
        if not found:
            return "empty"
        return found.pop() if len(found) == 1 else "mixed"

    def split(self, name: str) -> dict:
        """The split's content (``{}`` when absent)."""
        return self.data.get(name, {})


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    counts = Counter(k for k, _ in pairs)
    duplicates = [k for k, n in counts.items() if n > 1]
    if duplicates:
        raise ManifestError(f"duplicate key(s) {', '.join(map(repr, duplicates[:5]))}")
    return dict(pairs)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path} is not valid JSON ({err})") from None
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); a manifest is JSON in "
                            "UTF-8") from None
    except ManifestError as err:
        raise ManifestError(f"{path}: {err} (each id and key must appear once)") from None


def load_manifest(path: str | os.PathLike, prompts: Iterable[str] | None = None) -> Manifest:
    """Read a manifest and detect the shape of each split.

    Args:
        path: the JSON file.
        prompts: prompts accepted (default: the 8 standard prompts).

    Raises:
        ManifestError: missing file, invalid JSON, duplicate keys or invalid structure (the first problems listed).
    """
    path = Path(path)
    data = _read_json(path)
    shapes, problems = check_structure(data, STANDARD_PROMPTS if prompts is None else prompts)
    if problems:
        raise ManifestError(f"{path} is not a valid manifest: " + "; ".join(problems[:5])
                            + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
    return Manifest(path, data, shapes)


def write_manifest(path: str | os.PathLike, data: dict, prompts: Iterable[str] | None = None) -> Path:
    """Check the structure of ``data`` and write it atomically as JSON with a 4-space indent (key order kept).

    Raises:
        ManifestError: the structure is invalid (nothing is written).
    """
    path = Path(path)
    _, problems = check_structure(data, STANDARD_PROMPTS if prompts is None else prompts)
    if problems:
        raise ManifestError(f"refusing to write {path}: " + "; ".join(problems[:5]))
    return write_text(path, json.dumps(data, indent=4) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# validation


@dataclass
class PromptStats:
    """Number of sources (pool entries or references) of one prompt in one split, and their total duration."""

    count: int = 0
    seconds: float = 0.0

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0


@dataclass
class ManifestReport:
    """Result of :func:`validate_manifest`.

    ``stats[split][prompt]`` counts pool entries (pool splits) or references (mixture splits); ``items[split]`` is
    the number of entries (pool) or mixtures; ``problems`` are one-line messages, empty when the manifest is valid.
    """

    path: Path
    shapes: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    stats: dict[str, dict[str, PromptStats]] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    files_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self, max_problems: int = 20) -> str:
        """Human-readable summary: status, a per-split/per-prompt table, and the first problems."""
        shapes = ", ".join(f"{s}: {self.shapes[s]}" for s in self.shapes) or "no split"
        status = "OK" if self.ok else f"FAILED ({len(self.problems)} problem(s))"
        lines = [f"{self.path}: {status} [{shapes}; {self.files_checked} file(s) checked]"]
        if self.stats:
            lines.append(f"  {'split':<6} {'prompt':<9} {'count':>8} {'hours':>9}")
            for split, per_prompt in self.stats.items():
                kind = "entries" if self.shapes.get(split) == "pool" else "mixtures"
                lines.append(f"  {split:<6} {'(' + kind + ')':<9} {self.items.get(split, 0):>8}")
                for prompt, st in per_prompt.items():
                    lines.append(f"  {split:<6} {prompt:<9} {st.count:>8} {st.hours:>9.2f}")
        for problem in self.problems[:max_problems]:
            lines.append(f"  problem: {problem}")
        if len(self.problems) > max_problems:
            lines.append(f"  … and {len(self.problems) - max_problems} more problem(s)")
        return "\n".join(lines)


def _file_references(data: dict, shapes: dict[str, str]):
    """Yield ``(where, path, sample_rate, num_samples)`` for every audio file of a structurally valid manifest."""
    for split, shape in shapes.items():
        if shape == "pool":
            for prompt, entries in data[split].items():
                for i, e in enumerate(entries):
                    yield f"{split}/{prompt}[{i}]", e["path"], e["sample_rate"], e["num_samples"]
        elif shape == "mixtures":
            for item_id, e in data[split].items():
                if "mix" in e:
                    yield f"{split}/{item_id} mix", e["mix"], e["sample_rate"], e["num_samples"]
                for key, p in e["ref"].items():
                    yield f"{split}/{item_id} {key}", p, e["sample_rate"], e["num_samples"]


def _collect_stats(report: ManifestReport, data: dict) -> None:
    for split, shape in report.shapes.items():
        per_prompt: dict[str, PromptStats] = {}
        if shape == "pool":
            report.items[split] = sum(len(v) for v in data[split].values())
            for prompt, entries in data[split].items():
                st = per_prompt.setdefault(prompt, PromptStats())
                st.count += len(entries)
                st.seconds += sum(e["num_samples"] / e["sample_rate"] for e in entries)
        elif shape == "mixtures":
            report.items[split] = len(data[split])
            for e in data[split].values():
                seconds = e["num_samples"] / e["sample_rate"]
                for key in e["ref"]:
                    st = per_prompt.setdefault(ref_prompt(key), PromptStats())
                    st.count += 1
                    st.seconds += seconds
        else:
            report.items[split] = 0
        report.stats[split] = per_prompt


def _header(path: Path) -> tuple[int, int] | str:
    """``(sample_rate, num_samples)`` from the audio header, or a one-line error."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        return f"not a readable audio file ({err})"
    return int(info.samplerate), int(info.frames)


def validate_manifest(
    path: str | os.PathLike,
    check_audio: bool = True,
    check_files: bool = True,
    prompts: Iterable[str] | None = None,
    root: str | os.PathLike | None = None,
    jobs: int = 8,
) -> ManifestReport:
    """Validate a manifest of either shape and summarise it.

    Checks: top-level keys, split shapes, entry keys and types, known prompts, ``<prompt>_<k>`` reference keys,
    duplicate ids/keys (in the JSON text) and duplicate paths within a pool; with ``check_files`` that every file
    exists; with ``check_audio`` also that the header's sample rate and length equal ``sample_rate`` and
    ``num_samples``.

    Args:
        path: the manifest.
        check_audio: read every audio header (implies ``check_files``).
        check_files: check that every referenced file exists.
        prompts: accepted prompts (default: the 8 standard ones).
        root: directory that relative paths are relative to (default: the current directory, i.e. the repository
            root where training runs).
        jobs: threads reading headers.

    Returns:
        A :class:`ManifestReport`; ``report.ok`` is False when any problem was found (never raises for a bad
        manifest).
    """
    report = ManifestReport(Path(path))
    try:
        data = _read_json(report.path)
    except ManifestError as err:
        report.problems.append(str(err))
        return report
    report.shapes, problems = check_structure(data, STANDARD_PROMPTS if prompts is None else prompts)
    report.problems.extend(problems)
    if problems:
        return report
    _collect_stats(report, data)
    if not (check_files or check_audio):
        return report
    root = Path.cwd() if root is None else Path(root)
    refs = list(_file_references(data, report.shapes))
    unique = list(dict.fromkeys(p for _, p, _, _ in refs))
    resolved = {p: root / p for p in unique}  # an absolute p stays absolute
    missing = {p for p in unique if not resolved[p].is_file()}
    headers: dict[str, tuple[int, int] | str] = {}
    if check_audio:
        present = [p for p in unique if p not in missing]
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            headers = dict(zip(present, pool.map(lambda p: _header(resolved[p]), present), strict=True))
    report.files_checked = len(unique)
    reported: set[str] = set()
    for where, p, sr, n in refs:
        if p in missing:
            report.problems.append(f"{where}: file not found: {p}")
            continue
        header = headers.get(p)
        if header is None:
            continue
        if isinstance(header, str):
            if p not in reported:
                report.problems.append(f"{where}: {p}: {header}")
                reported.add(p)
            continue
        if header[0] != sr:
            report.problems.append(f"{where}: {p} has sample rate {header[0]} but the manifest says {sr}")
        if header[1] != n:
            report.problems.append(f"{where}: {p} has {header[1]} samples but the manifest says {n}")
    return report


# ----------------------------------------------------------------------------------------------------------------
# command line


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m datasets.manifest", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate manifests and print a per-split, per-prompt summary")
    check.add_argument("manifests", nargs="+", type=Path, help="manifest JSON files")
    check.add_argument("--prompts", nargs="+", default=[], metavar="NAME",
                       help="prompts accepted besides the 8 standard ones (names without '_')")
    check.add_argument("--no-audio", action="store_true", help="do not read audio headers (files must still exist)")
    check.add_argument("--no-files", action="store_true", help="structure only: no file access at all")
    check.add_argument("--root", type=Path, default=None,
                       help="directory relative paths start from (default: the current directory)")
    check.add_argument("--max-problems", type=int, default=20, help="problems printed per manifest (default 20)")
    check.add_argument("--jobs", type=int, default=8, help="threads reading audio headers (default 8)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``check`` command: exit status 0 when every manifest is valid, 1 otherwise."""
    args = _parse_args(argv)
    bad = [p for p in args.prompts if "_" in p or not p]
    if bad:
        print(f"error: --prompts {' '.join(bad)}: prompt names must be non-empty and contain no '_'", file=sys.stderr)
        return 2
    prompts = tuple(dict.fromkeys((*STANDARD_PROMPTS, *args.prompts)))
    failed = 0
    for path in args.manifests:
        report = validate_manifest(path, check_audio=not (args.no_audio or args.no_files),
                                   check_files=not args.no_files, prompts=prompts, root=args.root, jobs=args.jobs)
        print(report.format(args.max_problems))
        failed += not report.ok
    if len(args.manifests) > 1:
        print(f"{len(args.manifests) - failed} of {len(args.manifests)} manifest(s) valid")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

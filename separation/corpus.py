"""Separating many files: inputs gathered from folders, lists and manifests, outputs mirrored, done files skipped,
a log line per file, and the work sharded over the processes of a ``torchrun`` or SLURM job (docs/separation.md,
"Separating a corpus").

- :func:`collect_inputs`: the audio files of ``--audio_path`` (folders recursively), ``--file_list`` and
  ``--manifest``, each once, in a stable order.
- :func:`mirrored_dirs`: one output folder per input, its path relative to the inputs' common folder without the
  extension, so equal names in different folders never collide.
- :class:`Plan`: rank 0 reads every header (threads), finds the files already done (their ``.separated.json``
  marker, written in the same swap as the outputs, matches the input, the model and the options) and balances the
  rest over the ranks by audio duration (longest first onto the least loaded rank); the other ranks receive it.
- :class:`RunLog`: ``separation_log.jsonl`` in the output folder, one JSON line per file (input, outputs, duration,
  seconds, status, error), each appended with one ``write`` and ``fsync``; with several ranks each appends to its
  own ``separation_log.rank<R>.jsonl``, which rank 0 merges into the main log at the end (and at the start of the
  next run, after a kill).
- :class:`Ranks`: rank, world size and the devices of the process, from ``torchrun`` (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``) or SLURM (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``); a ``gloo`` process group for
  the plan, the barrier and the summary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from separation.options import SeparationError, SeparationOptions

__all__ = ["AUDIO_SUFFIXES", "LOG_NAME", "collect_inputs", "mirrored_dirs", "fingerprint", "is_done", "Ranks",
           "RunLog", "Plan", "balance"]

#: audio file suffixes taken from folders
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus"}
#: the run's log in the output folder
LOG_NAME = "separation_log.jsonl"


# -- inputs and outputs ----------------------------------------------------------------------------------------------

def _audio_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _list_file(path: Path) -> list[Path]:
    """The paths of a ``--file_list`` (one a line; blank lines and ``#`` comments skipped; relative to the list)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SeparationError(f"--file_list {path} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SeparationError(f"--file_list {path} cannot be read as UTF-8 text: {err}") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(Path(line) if Path(line).is_absolute() else path.parent / line)
    return out


def _manifest_mixtures(path: Path) -> list[Path]:
    """The mixture files (``mix``) of a project manifest's fixed splits (datasets/manifest.py)."""
    from datasets.manifest import ManifestError, load_manifest

    try:
        manifest = load_manifest(path)
    except ManifestError as err:
        raise SeparationError(f"--manifest: {err}") from None
    out = []
    for split, shape in manifest.shapes.items():
        if shape != "mixtures":
            continue
        out += [Path(entry["mix"]) for entry in manifest.split(split).values() if entry.get("mix")]
    if not out:
        raise SeparationError(f"--manifest {path} lists no mixture file (a 'mix' entry of a valid or test mixture)")
    return out


def collect_inputs(audio_paths: Sequence[str] = (), file_list: str | None = None,
                   manifest: str | None = None) -> tuple[list[Path], bool]:
    """The inputs of a request, each once (first occurrence kept), and whether they form a corpus (a folder, a list,
    a manifest or several files) rather than one file given by name.

    Raises:
        SeparationError: a named file or folder that does not exist, a folder without audio, an unreadable list or
            manifest. Files named by a list or a manifest are checked when they are separated (a missing one is
            logged and skipped).
    """
    files: list[Path] = []
    corpus = bool(file_list or manifest)
    for raw in audio_paths:
        path = Path(raw)
        if path.is_dir():
            found = _audio_in(path)
            if not found:
                raise SeparationError(f"folder {path} holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
            files += found
            corpus = True
        elif path.is_file():
            files.append(path)
        else:
            raise SeparationError(f"audio file not found: {path}")
    if file_list:
        files += _list_file(Path(file_list))
    if manifest:
        files += _manifest_mixtures(Path(manifest))
    seen: set[str] = set()
    unique = []
    for path in files:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    if not unique:
        raise SeparationError(f"--file_list {file_list} lists no file" if file_list else "no input files")
    return unique, corpus or len(unique) > 1


def mirrored_dirs(inputs: Sequence[Path], out_root: Path) -> list[Path]:
    """``out_root/<path relative to the inputs' common folder, without the extension>`` for each input
    (``a/x.wav`` and ``b/x.wav`` -> ``out/a/x``, ``out/b/x``); two inputs that differ only by extension get it
    appended (``x_flac``).

    >>> [str(p) for p in mirrored_dirs([Path("/d/a/x.wav"), Path("/d/b/x.wav"), Path("/d/b/x.flac")], Path("out"))]
    ['out/a/x', 'out/b/x', 'out/b/x_flac']
    """
    absolute = [Path(os.path.abspath(p)) for p in inputs]
    root = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    used: set[Path] = set()
    dirs = []
    for path in absolute:
        rel = path.relative_to(root).with_suffix("")
        target = out_root / rel
        if target in used:
            target = out_root / rel.parent / f"{rel.name}_{path.suffix.lstrip('.').lower()}"
        while target in used:
            target = target.with_name(target.name + "_")
        used.add(target)
        dirs.append(target)
    return dirs


def fingerprint(path: Path, model: str, options: SeparationOptions) -> dict[str, Any]:
    """What an output set is made from: the input (absolute path, size, modification time), the model and the
    options. A set whose marker equals it is done (:func:`is_done`)."""
    st = path.stat()
    model_path = Path(model)
    model_id: dict[str, Any] = {"model": str(model_path.resolve()) if model_path.exists() else str(model)}
    if model_path.is_file():
        mst = model_path.stat()
        model_id.update(model_size=mst.st_size, model_mtime_ns=mst.st_mtime_ns)
    opts = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(options).items()
            if k != "model_rate"}
    return {"input": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, **model_id,
            "options": opts}


def is_done(out_dir: Path, marker: Mapping[str, Any]) -> bool:
    """Whether ``out_dir`` holds the complete output set of ``marker`` (its ``.separated.json`` equals it)."""
    from separation.separator import MARKER_NAME

    try:
        return json.loads((out_dir / MARKER_NAME).read_text(encoding="utf-8")) == json.loads(json.dumps(marker))
    except (OSError, ValueError):
        return False


# -- processes -------------------------------------------------------------------------------------------------------

def _env_int(*names: str, default: int) -> int:
    for name in names:
        value = os.environ.get(name, "")
        if value.strip().isdigit():
            return int(value)
    return default


@dataclass
class Ranks:
    """This process's place in a job: ``rank`` of ``world`` (``local_rank`` of ``local_world`` on its node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    _group: bool = field(default=False, repr=False)

    @classmethod
    def from_env(cls) -> Ranks:
        """From ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``LOCAL_WORLD_SIZE``) or SLURM
        (``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``/``SLURM_NTASKS_PER_NODE``); one process otherwise."""
        world = _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)
        if world <= 1:
            return cls()
        rank = _env_int("RANK", "SLURM_PROCID", default=0)
        local_rank = _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)
        per_node = os.environ.get("SLURM_NTASKS_PER_NODE", "").split("(")[0]
        local_world = _env_int("LOCAL_WORLD_SIZE", default=int(per_node) if per_node.isdigit() else world)
        return cls(rank, world, local_rank, max(1, local_world))

    def start(self) -> Ranks:
        """Join the job's ``gloo`` process group (when there are several processes)."""
        if self.world > 1:
            import torch.distributed as dist

            if "MASTER_ADDR" not in os.environ and "SLURM_JOB_ID" in os.environ:  # srun without torchrun
                from lightning.fabric.plugins.environments import SLURMEnvironment

                slurm = SLURMEnvironment()
                os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = slurm.main_address, str(slurm.main_port)
            dist.init_process_group("gloo", rank=self.rank, world_size=self.world)
            self._group = True
        return self

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self._group:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (in rank order) on rank 0; ``[]`` elsewhere."""
        if not self._group:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.gather_object(obj, out if self.rank == 0 else None, dst=0)
        return out if self.rank == 0 else []

    def barrier(self) -> None:
        if self._group:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self._group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._group = False


def balance(durations: Sequence[float], world: int) -> list[list[int]]:
    """Indices of ``durations`` for each of ``world`` ranks: longest first, each onto the least loaded rank (ties:
    the lowest rank), each rank's share then in input order.

    >>> balance([10, 1, 1, 8, 2], 2)
    [[0, 1], [2, 3, 4]]
    """
    loads = [0.0] * world
    shares: list[list[int]] = [[] for _ in range(world)]
    for i in sorted(range(len(durations)), key=lambda i: (-durations[i], i)):
        r = min(range(world), key=lambda r: (loads[r], r))
        loads[r] += durations[i]
        shares[r].append(i)
    return [sorted(s) for s in shares]


# -- the log ---------------------------------------------------------------------------------------------------------

class RunLog:
    """``separation_log.jsonl`` (or this rank's ``separation_log.rank<R>.jsonl``) in ``out_root``."""

    def __init__(self, out_root: Path, ranks: Ranks):
        self.main = out_root / LOG_NAME
        self.path = self.main if ranks.world == 1 else out_root / f"separation_log.rank{ranks.rank}.jsonl"

    @staticmethod
    def _append(path: Path, data: bytes) -> None:
        """``data`` appended to ``path`` with one ``write``, then ``fsync``: a kill leaves whole lines only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, record: Mapping[str, Any]) -> None:
        """One line for ``record``."""
        self._append(self.path, (json.dumps(dict(record), sort_keys=True) + "\n").encode("utf-8"))

    def merge(self) -> int:
        """Append the rank logs found beside the main log to it (rank 0, when no rank writes); returns the lines
        merged. A rank log is removed only once its lines are in the main log."""
        merged = 0
        for part in sorted(self.main.parent.glob("separation_log.rank*.jsonl")):
            data = part.read_bytes()
            lines = [x for x in data.split(b"\n") if x.strip()]
            if lines:
                self._append(self.main, b"\n".join(lines) + b"\n")
                merged += len(lines)
            part.unlink()
        return merged


# -- the plan --------------------------------------------------------------------------------------------------------

@dataclass
class Item:
    """One input of a corpus run: its output folder, its header's facts (``job``) or why it cannot be separated,
    its marker, and whether it is done."""

    path: Path
    output_dir: Path
    job: Any = None
    error: str | None = None
    duration: float = 0.0
    marker: dict[str, Any] | None = None
    done: bool = False


@dataclass
class Plan:
    """What each rank separates: made on rank 0 (:meth:`make`), sent to the others (:meth:`share`)."""

    items: list[Item]
    shares: list[list[int]]

    @classmethod
    def make(cls, inputs: Sequence[Path], out_dirs: Sequence[Path], options: SeparationOptions, model: str,
             world: int, overwrite: bool, threads: int = 8) -> Plan:
        from separation.separator import prepare_file

        def look(pair: tuple[Path, Path]) -> Item:
            path, out_dir = pair
            item = Item(path, out_dir)
            try:
                item.job = prepare_file(path, out_dir, options)
                item.duration = item.job.num_samples / item.job.sample_rate
                item.marker = fingerprint(path, model, options)
                item.done = not overwrite and is_done(out_dir, item.marker)
            except (SeparationError, OSError) as err:
                item.error = str(err)
            return item

        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            items = list(pool.map(look, zip(inputs, out_dirs, strict=True)))
        todo = [i for i, it in enumerate(items) if it.job is not None and not it.done]
        shares = [[todo[k] for k in share] for share in balance([items[i].duration for i in todo], world)]
        return cls(items, shares)

    def counts(self) -> dict[str, int]:
        return {"files": len(self.items), "done before": sum(it.done for it in self.items),
                "unusable": sum(it.error is not None for it in self.items)}

    def mine(self, rank: int) -> list[Item]:
        return [self.items[i] for i in self.shares[rank]]


def records(items: Iterable[Item], status: str) -> list[dict[str, Any]]:
    """Log lines of items that were not separated in this run (``skipped``: done before; ``error``: unusable)."""
    return [{"input": str(it.path), "outputs": str(it.output_dir), "duration": round(it.duration, 3),
             "seconds": 0.0, "status": status, "error": it.error} for it in items]


# -- the run ---------------------------------------------------------------------------------------------------------

def separate_corpus(inputs: Sequence[Path], out_root: Path, options: SeparationOptions, model: str,
                    make_separator: Any, device: str | None = None, overwrite: bool = False, quiet: bool = False,
                    warn: Any = None) -> int:
    """Separate ``inputs`` into :func:`mirrored_dirs` of ``out_root``, sharded over this job's processes; returns
    the exit status: 0, or 1 when a file failed (the summary says how many, and where the log is).

    Each rank loads the model once (``make_separator(model, device)``; device ``cuda:LOCAL_RANK`` when CUDA is there
    and no other device was asked for, else the CPU with its share of the cores), separates its share, and logs a
    line per file. A file that cannot be separated (unreadable, too short, a cut past its end) is logged and
    skipped; a failed write (a full disk) stops the rank (the set being written is not swapped in). The summary is
    printed once, by rank 0.

    Raises:
        SeparationError: options that do not fit the model (before any file is separated).
    """
    import time

    import torch
    from tqdm import tqdm

    from separation.separator import output_names

    ranks = Ranks.from_env().start()
    try:
        log = RunLog(out_root, ranks)
        plan = None
        if ranks.rank == 0:
            out_root.mkdir(parents=True, exist_ok=True)
            log.merge()  # what ranks of a killed run logged
            plan = Plan.make(inputs, mirrored_dirs(inputs, out_root), options, model, ranks.world, overwrite)
        plan = ranks.broadcast(plan)
        if ranks.world > 1:
            if device is None or device == "cuda":
                device = f"cuda:{ranks.local_rank}" if torch.cuda.is_available() else "cpu"
            if str(device) == "cpu":
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // ranks.local_world))
        separator = make_separator(model, device)
        bound = separator.bind(options)
        names = " ".join(output_names(bound.prompts, separator.num_outputs(bound.prompts)))
        if ranks.rank == 0:
            for record in records([it for it in plan.items if it.done], "skipped"):
                log.append(record)
            for record in records([it for it in plan.items if it.error is not None], "error"):
                log.append(record)
        mine = plan.mine(ranks.rank)
        stats = {"separated": 0, "failed": 0, "seconds": 0.0, "audio": 0.0, "write_error": None}
        bar = tqdm(total=round(sum(it.duration for it in mine)), unit="s", desc="audio separated",
                   disable=quiet or ranks.rank != 0 or not mine, dynamic_ncols=True)
        with bar:
            for it in mine:
                started = time.monotonic()
                record = {"input": str(it.path), "outputs": str(it.output_dir), "duration": round(it.duration, 3)}
                try:
                    separator.check_length(it.job.num_samples, it.job.sample_rate, it.job.name)
                    separator.run_file(it.job, bound, progress=False, warn=warn, marker=it.marker)
                except (SeparationError, OSError) as err:
                    stats["failed"] += 1
                    log.append({**record, "seconds": round(time.monotonic() - started, 3), "status": "error",
                                "error": str(err)})
                    if isinstance(err, OSError):  # a full disk, a lost mount: this rank stops
                        stats["write_error"] = str(err)
                        break
                else:
                    seconds = time.monotonic() - started
                    stats["separated"] += 1
                    stats["seconds"] += seconds
                    stats["audio"] += it.duration
                    log.append({**record, "seconds": round(seconds, 3), "status": "done", "error": None})
                bar.update(round(it.duration))
        ranks.barrier()
        gathered = ranks.gather(stats)
        if ranks.rank != 0:
            return 1 if stats["failed"] else 0
        log.merge()
        counts = plan.counts()
        separated = sum(s["separated"] for s in gathered)
        failed = sum(s["failed"] for s in gathered) + counts["unusable"]
        audio = sum(s["audio"] for s in gathered)
        busy = max((s["seconds"] for s in gathered), default=0.0)
        if not quiet or failed:
            print(f"{counts['files']} file(s) ({names}): {separated} separated ({audio / 3600:.2f} h of audio"
                  f"{f' in {busy:.1f} s' if separated else ''}, {ranks.world} process(es)), {counts['done before']} "
                  f"already done, {failed} failed -> {out_root} (log: {log.main})")
        for s in gathered:
            if s["write_error"]:
                print(f"error: {s['write_error']}", file=sys.stderr)
        if failed:
            print(f"error: {failed} of {counts['files']} file(s) could not be separated; their lines in {log.main} "
                  "say why", file=sys.stderr)
            return 1
        return 0
    finally:
        ranks.close()

"""Evaluation of a trained model on its config's test sets (the work behind ``eval.py``).

:func:`evaluate` loads a checkpoint (averaged for an experiment directory), runs the test sets through the Lightning
module (:class:`training.module.SeparationModule`), writes ``result.txt``/``result.json`` (``result_single.*``
in the single-prompt setup) into the experiment directory and the separated audio under ``audio_outputs/<dataset>/``
(``audio_outputs_single/`` in the single-prompt setup), with the per-output values in ``results_items.csv``, the
summary as a Markdown table ``result.md`` and a bar chart ``result.png`` (``_single`` likewise).

Metrics (``metrics``, ``eval.py --metrics``): ``snr`` and ``sisnr`` (with their improvements; the default, always
computed) and the extras of :data:`training.metrics.EXTRA_METRICS`, computed in the test step for the outputs whose
prompt they fit; the result files hold ``loss`` and the requested metrics (:func:`training.metrics.metric_keys`).

Single-prompt setup (paper, §4): the model is not told about the other sources. Outputs that share a prompt are still
separated together (``speech speech sfx`` runs ``[speech, speech]`` then ``[sfx]``; ``SeparationModule.single_prompt``
does it): a single ``speech`` prompt could not separate two talkers.

Several processes (``devices``/``num_nodes``, ``eval.py --devices N``; docs/evaluation.md, "Several processes or
GPUs"): each process scores its shard of every test set (:class:`datasets.sampler.ShardSampler`: no item twice, none
left out); :class:`ShardOrder` gathers the per-output records, the unreadable-mixture markers and the audio's
places, and puts them in the order one process scores them (test set, then position in it), so the means, the
result files and the audio's names are those of a one-process run. Only the first process checks the experiment
directory, completes a killed evaluation's swap and writes the result; the others write only their separated audio,
into the first one's staging folder (so the experiment directory must be one folder that all of them see).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import shutil
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment

from datasets.fixed import FixedDataset
from nets import load_model
from separation.options import SeparationOptions
from training.callbacks import LineProgress, quiet_lightning
from training.data import SeparationDataModule
from training.metrics import (
    DEFAULT_EVAL_METRICS,
    EXTRA_METRICS,
    MEDIAN_METRICS,
    aggregate_records,
    check_metrics,
    metric_keys,
)
from training.module import SeparationModule
from utils.atomic import StagedFolder, fsync_file, probe_writable, write_error
from utils.audio import write_audio
from utils.checkpoint import CheckpointError, find_config, find_model
from utils.config import ConfigError, load_config
from utils.runtime import launch_rank, pick_device

__all__ = ["PRECISIONS", "EvaluationError", "experiment_dir", "result_paths", "report_paths", "check_result_paths",
           "format_results", "format_items_csv", "format_markdown", "main_metric", "result_figure", "write_results",
           "AudioSaver", "ShardOrder", "first_process", "evaluate"]


PRECISIONS = {"32": "32-true", "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed"}
"""``--precision`` values and the Lightning precision each selects."""


log = logging.getLogger(__name__)

class EvaluationError(ValueError):
    """An evaluation that cannot run (existing result, no test data, …); the message says what to do."""


def experiment_dir(ckpt_path: str | os.PathLike) -> Path:
    """The experiment directory of a checkpoint: the directory itself, or the folder of the checkpoint's
    ``hparams.yaml`` (two levels up: ``exp/oss/<name>/checkpoints/x.ckpt -> exp/oss/<name>``)."""
    if not Path(ckpt_path).exists():
        raise CheckpointError(f"checkpoint not found: {ckpt_path}")
    return find_config(ckpt_path).parent


def result_paths(exp_dir: str | os.PathLike, single_prompt: bool = False) -> tuple[Path, Path, Path]:
    """``(result.txt, result.json, audio_outputs/)`` (``result_single.*``, ``audio_outputs_single/``) of an
    experiment directory."""
    exp_dir = Path(exp_dir)
    suffix = "_single" if single_prompt else ""
    return exp_dir / f"result{suffix}.txt", exp_dir / f"result{suffix}.json", exp_dir / f"audio_outputs{suffix}"


def report_paths(exp_dir: str | os.PathLike, single_prompt: bool = False) -> tuple[Path, Path, Path]:
    """``(results_items.csv, result.md, result.png)`` (``results_items_single.csv``, ``result_single.*``) of an
    experiment directory: written with :func:`result_paths`' files, before them."""
    exp_dir = Path(exp_dir)
    suffix = "_single" if single_prompt else ""
    return (exp_dir / f"results_items{suffix}.csv", exp_dir / f"result{suffix}.md",
            exp_dir / f"result{suffix}.png")


def format_results(metrics: Mapping[str, float]) -> str:
    """Sorted ``key: value`` lines, values with two decimals."""
    return "".join(f"{k}: {metrics[k]:.2f}\n" for k in sorted(metrics))


ITEM_COLUMNS = ("dataset", "manifest", "channel", "id", "prompt")
"""The first columns of ``results_items.csv``: which output of which item a row is."""


def format_items_csv(records: Iterable[Mapping], keys: Sequence[str]) -> str:
    """``results_items.csv``: a header :data:`ITEM_COLUMNS` + ``keys``, then one row per record (per output of every
    test item, in test order); a value not computed for the output (an extra metric that does not fit its prompt)
    is an empty cell, NaN is ``nan``, other values at full precision.

        >>> print(format_items_csv([{"dataset": "d", "manifest": "m.json", "channel": 0, "id": "a", "prompt": "bass",
        ...                          "loss": -1.5, "sdr": 6.25}, {"dataset": "d", "manifest": "m.json", "channel": 0,
        ...                          "id": "a", "prompt": "speech", "loss": -2.0}], ["loss", "sdr"]), end="")
        dataset,manifest,channel,id,prompt,loss,sdr
        d,m.json,0,a,bass,-1.5,6.25
        d,m.json,0,a,speech,-2.0,
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*ITEM_COLUMNS, *keys])
    for rec in records:
        row = ["" if rec.get(c) is None else str(rec[c]) for c in ITEM_COLUMNS]
        row += ["" if rec.get(k) is None else repr(float(rec[k])) for k in keys]
        writer.writerow(row)
    return buf.getvalue()


def _table(metrics: Mapping[str, float], stage: str = "test") -> dict[str, dict[str, dict[str, float]]]:
    """``{dataset: {prompt or "": {metric: value}}}`` from aggregated keys (``""``: the dataset's own values)."""
    table: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) < 2 or not parts[0].endswith(f"_{stage}"):
            continue
        dataset = parts[0].removesuffix(f"_{stage}")
        table[dataset]["" if len(parts) == 2 else "/".join(parts[1:-1])][parts[-1]] = value
    return table


def format_markdown(metrics: Mapping[str, float], keys: Sequence[str], stage: str = "test") -> str:
    """``result.md``: a Markdown table, one row per dataset (prompt ``all``: the dataset's value) and per dataset and
    prompt, then the mean over datasets (``all``/``all``); one column per key of ``keys`` except ``loss`` (two
    decimals, ``-`` where a metric was not computed), and a line saying how the values are aggregated.

        >>> table, note = format_markdown({"test/sisnri": 5.0, "d_test/sisnri": 5.0, "d_test/speech/sisnri": 4.5,
        ...                                "d_test/sfx/sisnri": 5.5}, ["loss", "sisnri", "pesq"]).split("\\n\\n")
        >>> print(table)
        | dataset | prompt | sisnri | pesq |
        | --- | --- | ---: | ---: |
        | d | all | 5.00 | - |
        | d | sfx | 5.50 | - |
        | d | speech | 4.50 | - |
        | all | all | 5.00 | - |
    """
    cols = [k for k in keys if k != "loss"]

    def row(dataset: str, prompt: str, values: Mapping[str, float]) -> str:
        cells = [f"{values[k]:.2f}" if k in values and not math.isnan(values[k]) else "-" for k in cols]
        return "| " + " | ".join([dataset, prompt, *cells]) + " |\n"

    table = _table(metrics, stage)
    lines = ["| " + " | ".join(["dataset", "prompt", *cols]) + " |\n",
             "| " + " | ".join(["---", "---", *["---:"] * len(cols)]) + " |\n"]
    for dataset in sorted(table):
        lines.append(row(dataset, "all", table[dataset].get("", {})))
        lines += [row(dataset, prompt, table[dataset][prompt]) for prompt in sorted(table[dataset]) if prompt]
    overall = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith(f"{stage}/")}
    lines.append(row("all", "all", overall))
    note = ("Means over items (an item: the mean over its outputs); a prompt's row: over its outputs; `all`/`all`: "
            "the mean over datasets. dB, except pesq (MOS-LQO, 1-4.64) and estoi (0-1)")
    medians = [m for m in MEDIAN_METRICS if m in cols]
    note += f"; {', '.join(medians)}: medians over items instead of means.\n" if medians else ".\n"
    return "".join(lines) + "\n" + note


MAIN_METRICS = ("sisnri", "sdr", "usdr", "snri", "pesq", "estoi")
"""The figure's metric: the first of these that the run reports (SI-SNRi, the paper's metric, when ``sisnr`` is
requested -- the default)."""


def main_metric(names: Iterable[str]) -> str:
    """The metric :func:`result_figure` draws for ``--metrics`` ``names`` (:data:`MAIN_METRICS`).

        >>> main_metric(["snr", "sisnr"]), main_metric(["pesq", "sdr"]), main_metric(["estoi"])
        ('sisnri', 'sdr', 'estoi')
    """
    keys = metric_keys(names)
    return next(m for m in MAIN_METRICS if m in keys)


def result_figure(metrics: Mapping[str, float], metric: str, stage: str = "test"):
    """``result.png``'s figure (matplotlib, Agg canvas, no pyplot state): one group of bars per dataset that has
    ``metric`` for some prompt, one bar per prompt (a colour per prompt, the value written above it).

    Returns:
        ``(figure, groups)``: the :class:`matplotlib.figure.Figure` and ``[(dataset, [prompts])]`` in drawing order.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazily: only the result figure needs matplotlib
    from matplotlib.figure import Figure

    table = _table(metrics, stage)
    groups = [(d, [p for p in sorted(table[d]) if p and metric in table[d][p]]) for d in sorted(table)]
    groups = [(d, prompts) for d, prompts in groups if prompts]
    prompts = sorted({p for _, ps in groups for p in ps})
    colours = {p: f"C{i % 10}" for i, p in enumerate(prompts)}
    width = 0.8 / max([len(ps) for _, ps in groups] or [1])
    fig = Figure(figsize=(max(6.0, 1.2 + 0.45 * sum(len(ps) + 1 for _, ps in groups)), 4.0), dpi=100,
                 layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    labelled = set()
    for g, (dataset, ps) in enumerate(groups):
        for b, prompt in enumerate(ps):
            x = g + width * (b - (len(ps) - 1) / 2)  # the group centred on its tick
            value = table[dataset][prompt][metric]
            ax.bar(x, value, width * 0.9, color=colours[prompt], label=None if prompt in labelled else prompt)
            labelled.add(prompt)
            ax.annotate(f"{value:.2f}", (x, value), ha="center", va="bottom" if value >= 0 else "top", fontsize=7,
                        xytext=(0, 2 if value >= 0 else -2), textcoords="offset points")
    ax.set_xticks(range(len(groups)), [d for d, _ in groups])
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.margins(y=0.12)  # room for the values above the bars
    ax.axhline(0, color="black", linewidth=0.6)
    unit = {"pesq": "MOS-LQO", "estoi": "0-1"}.get(metric, "dB")
    ax.set_ylabel(f"{metric} ({unit})")
    ax.set_title(f"{metric} per test set and prompt" + (" (median over items)" if metric in MEDIAN_METRICS else ""))
    if prompts:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="prompt", title_fontsize=8)
    return fig, groups


def check_result_paths(exp_dir: str | os.PathLike, single_prompt: bool = False, save_audio: bool = True) -> None:
    """Check, before any work, that the result can be written: the experiment directory is a writable folder, and
    ``result*.txt``/``result*.json`` (and :func:`report_paths`' files) are not folders and ``audio_outputs*`` not a
    file (when ``save_audio``).

    Raises:
        EvaluationError: something of the wrong kind where a result goes, the message naming it.
        utils.atomic.WriteError: the experiment directory cannot be written (permission, read-only disk).
    """
    exp_dir = Path(exp_dir)
    txt, js, audio_dir = result_paths(exp_dir, single_prompt)
    if not exp_dir.is_dir():
        raise EvaluationError(f"experiment directory {exp_dir} is not a folder")
    for path in (txt, js, *report_paths(exp_dir, single_prompt)):
        if os.path.lexists(path) and not path.is_file():
            raise EvaluationError(f"{path} exists and is not a file; move it away to write the result")
    if save_audio and os.path.lexists(audio_dir) and not audio_dir.is_dir():
        raise EvaluationError(f"{audio_dir} exists and is not a folder; move it away or pass --no_audio")
    probe_writable(exp_dir)


#: prefix of the staging folder in the experiment directory in which a result set is written before it is swapped in
RESULT_STAGING = ".evaluating-"


def write_results(metrics: Mapping[str, float], txt_path: str | os.PathLike, json_path: str | os.PathLike,
                  extra_files: Mapping[Path, Callable[[Path], object]] | None = None,
                  staged: StagedFolder | None = None, also: Sequence[tuple[Path, Path | None]] = ()) -> None:
    """Write ``metrics`` as text (:func:`format_results`) and JSON (full precision, sorted keys; NaN, an empty group,
    as ``null``) and the ``extra_files`` (``{target: writer}``: ``writer(staged_path)`` writes the content; the
    staged file has the target's name), as one set with the ``also`` pairs (``(target, staged path)``, e.g. the
    audio folder).

    Every file is written and flushed into the staging folder ``staged`` (default: a new one beside ``txt_path``);
    then one journaled swap (:meth:`utils.atomic.StagedFolder.swap`) renames the ``also`` targets, the extra files,
    the JSON and the text (last) into place. A failure before the swap (full disk, a failing writer) leaves the
    previous result files untouched; a kill during it is completed by the next evaluation
    (:meth:`utils.atomic.StagedFolder.recover`), so the folder holds the complete old set or the complete new one.

    Raises:
        utils.atomic.WriteError: the message names the file and the reason.
    """
    clean = {k: (None if math.isnan(v) else float(v)) for k, v in sorted(metrics.items())}
    files = {**(extra_files or {}),
             Path(json_path): lambda tmp: tmp.write_text(json.dumps(clean, indent=2) + "\n", encoding="utf-8"),
             Path(txt_path): lambda tmp: tmp.write_text(format_results(metrics), encoding="utf-8")}
    own = staged is None
    staged = StagedFolder(Path(txt_path).parent, RESULT_STAGING) if own else staged
    try:
        pairs = list(also)
        for path, writer in files.items():
            tmp = staged.path / Path(path).name
            try:
                writer(tmp)
                fsync_file(tmp)
            except OSError as err:  # name the target, not the staged file
                raise write_error(err, path) from None
            pairs.append((Path(path), tmp))
        staged.swap(pairs)
    except BaseException:
        if own:
            staged.discard()
        raise
    if own:
        staged.close()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)) or "_"


class AudioSaver:
    """Test output hook (``SeparationModule.output_hook``) that saves separated audio.

    Files are named ``<dataset>/<index>_<prompt><j>_sisnr<value>.wav`` (``index``: the item's position among the
    dataset's test items, four digits; ``j``: the output's index; its SI-SNR, two decimals) and listed in
    ``<dataset>/items.tsv`` (index, manifest, channel, id). They go to ``staging`` (a folder inside a
    :class:`utils.atomic.StagedFolder`) while the test runs; :meth:`finish` writes the lists and returns the
    ``(out_dir, staging)`` pair that the result's swap renames into place (:func:`write_results`). Errors name the
    output path.
    """

    def __init__(self, out_dir: str | os.PathLike, staging: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.staging = Path(staging)
        self.rows: dict[str, list[str]] = defaultdict(list)

    def _names(self, info: Mapping) -> tuple[str, list[str]]:
        """``(dataset folder, file names of the item's outputs)`` for the next item of its dataset."""
        dataset = _safe(info["dataset"])
        index = len(self.rows[dataset])
        return dataset, [f"{index:04d}_{_safe(prompt)}{j}_sisnr{value:.2f}.wav"
                         for j, (prompt, value) in enumerate(zip(info["prompts"], info["sisnr"], strict=True))]

    def _list(self, dataset: str, info: Mapping) -> None:
        index = len(self.rows[dataset])
        self.rows[dataset].append(f"{index:04d}\t{info.get('manifest')}\t{info.get('channel')}\t{info['id']}")

    def __call__(self, info: Mapping, est: torch.Tensor, sample_rate: int) -> None:
        dataset, names = self._names(info)
        for j, name in enumerate(names):
            try:
                write_audio(self.staging / dataset / name, est[j], sample_rate, subtype="FLOAT")
            except OSError as err:  # name the file the user will look for, not the staged one
                raise write_error(err, self.out_dir / dataset / name) from None
        self._list(dataset, info)

    def place(self, info: Mapping, files: Sequence[str | os.PathLike]) -> None:
        """Take the next item's outputs, already written (by any process of a run on several: :class:`ShardOrder`)
        as ``files`` (one per output, on the staging folder's filesystem): renamed to the names :meth:`__call__`
        would have written, and listed."""
        dataset, names = self._names(info)
        for name, src in zip(names, files, strict=True):
            try:
                (self.staging / dataset).mkdir(parents=True, exist_ok=True)
                os.replace(src, self.staging / dataset / name)
            except OSError as err:
                raise write_error(err, self.out_dir / dataset / name) from None
        self._list(dataset, info)

    def finish(self) -> tuple[Path, Path]:
        """Write the ``items.tsv`` files; returns ``(out_dir, staging)``, the pair to swap in."""
        self.staging.mkdir(parents=True, exist_ok=True)  # no test item at all: an empty folder
        for dataset, lines in self.rows.items():
            path = self.staging / dataset / "items.tsv"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("index\tmanifest\tchannel\tid\n" + "\n".join(lines) + "\n")
                fsync_file(path)
            except OSError as err:
                raise write_error(err, self.out_dir / dataset / "items.tsv") from None
        return self.out_dir, self.staging


class ShardOrder(pl.Callback):
    """The test of several processes, put together as one process runs it (a no-op for one process).

    Each process scores its shard of every test set (:class:`datasets.sampler.ShardSampler`); this callback, which
    becomes the module's ``output_hook`` then, notes every scored item's place in the one-process order
    ``(test set, position in it)`` and writes its separated audio (``save_audio``) under provisional names into the
    first process's staging folder (``staging``: the folder's path there, ``None`` elsewhere; broadcast at set-up,
    where every process also checks that it sees the folder). At the end of the test it gathers, on every process,
    the items and the markers of unreadable mixtures, and sorts them and the module's gathered records
    (``SeparationModule.test_records``: one per output, each process's in its scoring order) into that order:
    :attr:`records`, :attr:`skipped`, and :meth:`place_audio` names the audio files as one process would have.

    Args:
        staging: the staging folder of the result (first process, when writing), else ``None``.
        save_audio: the processes write their separated audio.
        first: this process is the one that checks and writes (:func:`first_process`).
    """

    def __init__(self, staging: Path | None = None, save_audio: bool = False, first: bool = True):
        self.staging, self.save_audio, self.first = staging, save_audio, first
        self.active = False  # several processes
        #: the records of every output of every process, in one-process order (after the test)
        self.records: list[dict] = []
        #: the markers of the test mixtures that could not be read (``{"skipped": id, "reason", "manifest"}``)
        self.skipped: list[dict] = []
        #: ``(place, outputs, info, audio files)`` of this process's items; after the test every process's, sorted
        self.items: list[tuple[tuple[int, int], int, dict, list[str]]] = []
        self._marks: list[tuple[tuple[int, int], dict]] = []
        self._folder: Path | None = None
        self._loader = 0
        self._trainer: pl.Trainer | None = None
        self._positions: dict[int, dict[str, int]] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.world_size == 1:
            return
        self.active, self._trainer = True, trainer
        self.items, self._marks, self.records, self.skipped = [], [], [], []
        path = trainer.strategy.broadcast(None if self.staging is None else str(self.staging), src=0)
        sees = path is None or Path(path).is_dir()
        views = _all_gather((trainer.global_rank, self.first, sees))
        if [first for _, first, _ in views] != [rank == 0 for rank, _, _ in views]:
            raise EvaluationError("several processes, but the launcher's rank variables (RANK, LOCAL_RANK, "
                                  "NODE_RANK, SLURM_PROCID) do not make process 0 the first; start them with "
                                  "torchrun, srun or eval.py --devices alone")
        blind = [rank for rank, _, seen in views if not seen]
        if blind:
            raise EvaluationError(f"process {blind[0]} does not see the staging folder {path} of process 0: the "
                                  "experiment directory must be on a filesystem every process shares")
        if path is not None and self.save_audio:
            self._folder = Path(path) / ".shards" / f"rank{trainer.global_rank}"
        pl_module.output_hook = self

    def on_test_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
                            dataloader_idx: int = 0) -> None:
        if not self.active:
            return
        self._loader = dataloader_idx
        for mark in (batch or {}).get("skipped") or []:
            self._marks.append((self._place(str(mark["skipped"])), dict(mark)))

    def _place(self, item_id: str) -> tuple[int, int]:
        """``(test set, position in it)`` of an item of the current test set."""
        positions = self._positions.get(self._loader)
        if positions is None:
            entries = self._trainer.test_dataloaders[self._loader].dataset.entries
            positions = self._positions[self._loader] = {str(i): k for k, (i, _) in enumerate(entries)}
        return self._loader, positions[item_id]

    def __call__(self, info: Mapping, est: torch.Tensor, sample_rate: int) -> None:
        """The module's output hook: note the item's place; write its audio under provisional names."""
        files = []
        if self._folder is not None:
            for j in range(len(info["prompts"])):
                path = self._folder / f"{len(self.items):06d}_{j}.wav"
                try:
                    write_audio(path, est[j], sample_rate, subtype="FLOAT")
                except OSError as err:
                    raise write_error(err, path) from None
                files.append(str(path))
        self.items.append((self._place(str(info["id"])), len(info["prompts"]), dict(info), files))

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.active:
            return
        parts = _all_gather(self.items)
        marks = _all_gather(self._marks)
        records = list(getattr(pl_module, "test_records", []))  # gathered in process order by the module
        places = [item[0] for part in parts for item in part for _ in range(item[1])]
        if len(places) != len(records):
            raise RuntimeError(f"{len(records)} test records gathered for {len(places)} scored outputs")
        order = sorted(range(len(records)), key=places.__getitem__)  # stable: an item's outputs keep their order
        self.records = [records[i] for i in order]
        self.items = sorted((item for part in parts for item in part), key=lambda item: item[0])
        self.skipped = [mark for _, mark in sorted((m for part in marks for m in part), key=lambda m: m[0])]

    def place_audio(self, saver: AudioSaver) -> tuple[Path, Path]:
        """Give every process's audio its one-process name (:meth:`AudioSaver.place`, in one-process order); returns
        :meth:`AudioSaver.finish`'s pair."""
        for _, _, info, files in self.items:
            saver.place(info, files)
        if self.staging is not None:  # the provisional folders, now empty
            shutil.rmtree(Path(self.staging) / ".shards", ignore_errors=True)
        return saver.finish()


def _all_gather(obj: Any) -> list[Any]:
    """``obj`` of every process, in process order (one process: ``[obj]``)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, obj)
    return parts


#: the test mixtures the last :func:`evaluate` of this process could not read (``"<manifest> <id> (<reason>)"``)
SKIPPED: list[str] = []


def recover_results(exp_dir: Path, audio_dir: Path) -> None:
    """Finish the result swap of an evaluation killed during it (:meth:`utils.atomic.StagedFolder.recover`), and
    remove the staging folders killed evaluations left (also those of earlier versions, beside the audio folder)."""
    for prefix in (RESULT_STAGING, f".{audio_dir.name}-"):
        done = StagedFolder.recover(exp_dir, prefix)
        if done:
            log.warning("completed the result of an evaluation that was stopped while replacing its files: %s",
                        ", ".join(p.name for p in done))


def _skipped_note(skipped: Sequence[str]) -> str:
    """The lines ``result.md`` gets for test mixtures that were not scored (none: nothing)."""
    if not skipped:
        return ""
    return (f"\n**{len(skipped)} test mixture(s) could not be read and are not in the means above:**\n\n"
            + "".join(f"- {s}\n" for s in skipped))


def _count(value: int | str, flag: str) -> int:
    """A count of ``--devices``/``--num_nodes``: a whole number >= 1 (an int, or its digits from the command line).

    Raises:
        EvaluationError: anything else, naming the flag.
    """
    text = str(value).strip()
    if isinstance(value, bool) or not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise EvaluationError(f"{flag} must be a whole number >= 1, got {text or repr(value)}")
    return int(text)


def first_process() -> bool:
    """Whether this process is the first of an evaluation (the only one of a one-process run): the one that checks
    the experiment directory, writes the result and prints the summary."""
    return launch_rank() == 0


def _launched() -> tuple[str, int] | None:
    """``(variable, processes)`` that an outside launcher started this one among (torchrun: ``WORLD_SIZE``; a
    SLURM job step: ``SLURM_NTASKS``), ``None`` when none did."""
    world = os.environ.get("WORLD_SIZE")
    if world and world.isdigit():
        return "WORLD_SIZE", int(world)
    tasks = os.environ.get("SLURM_NTASKS")
    if tasks and tasks.isdigit() and SLURMEnvironment.detect():
        return "SLURM_NTASKS", int(tasks)
    return None


def _trainer_device(device: str | None, devices: int = 1) -> tuple[str, int | list[int]]:
    """Lightning ``(accelerator, devices)`` for a device name (default: a GPU when present) and a number of devices
    (processes) per node.

    Raises:
        EvaluationError: several devices of one that names a single device (``cuda:1``, ``mps``).
    """
    dev = pick_device(device)
    if devices == 1:
        if dev.type == "cuda":
            return "gpu", [dev.index or 0]
        if dev.type == "mps":
            return "mps", 1
        return "cpu", 1
    if dev.type == "cuda" and dev.index is not None:
        raise EvaluationError(f"--device {device} is one GPU; --devices {devices} takes the first {devices} GPUs "
                              "with --device cuda (CUDA_VISIBLE_DEVICES chooses which)")
    if dev.type == "mps":
        raise EvaluationError(f"--devices {devices} needs --device cpu or cuda (mps is a single device)")
    return ("gpu" if dev.type == "cuda" else "cpu"), devices


def evaluate(ckpt_path: str | os.PathLike, single_prompt: bool = False, css_segment_size: float | None = None,
             css_shift_size: float | None = None, overwrite: bool = False, device: str | None = None,
             save_audio: bool = True, progress: bool = True, precision: str = "32",
             write: bool = True, metrics: Sequence[str] = DEFAULT_EVAL_METRICS,
             strict: bool = False, devices: int | str = 1, num_nodes: int | str = 1) -> dict[str, float]:
    """Evaluate a checkpoint on the test sets of its config (see the module docstring for what is written).

    Args:
        ckpt_path: ``.ckpt``/``.pth`` file (config two levels up), experiment directory (checkpoints averaged), or
            the name of a model folder under the repository's ``pretrained_models/`` (``tuss.demo``).
        single_prompt: separate each group of equal prompts on its own.
        css_segment_size, css_shift_size: override ``css_conf`` (seconds) for the datasets in ``css_datasets``;
            the shift defaults to half of a given segment, else to the config's value.
        overwrite: replace an existing result (otherwise refuse).
        device: ``cpu``, ``cuda``, ``cuda:1``, ``mps`` (default: a GPU when present).
        save_audio: write the separated audio.
        precision: the network's precision, one of :data:`PRECISIONS` (``"bf16-mixed"``: bf16 autocast, e.g. on
            GPUs); STFT, masks and metrics stay float32.
        write: write the result files (and audio when ``save_audio``); ``False`` only returns the metrics (nothing
            is written, an existing result does not matter).
        metrics: names of :data:`training.metrics.EVAL_METRICS` (default ``snr``, ``sisnr``); the extras are computed
            only when named, for the outputs whose prompt they fit.
        strict: a test mixture that cannot be read (a missing or unreadable file) stops the evaluation before anything
            is written (:class:`EvaluationError`). Otherwise it is skipped and reported: ``test/skipped`` (their
            count) joins the results, ``result.md`` names them, and :data:`SKIPPED` holds them.
        devices, num_nodes: processes per node (CPU processes, or GPUs with a ``cuda`` device) and nodes; more than
            one process in all runs Lightning's DDP, each process scoring a shard of every test set (see the
            module docstring), with the result of a one-process run. Lightning starts the processes of a node by
            running the command line (``sys.argv``) again, so call this from a script such as ``eval.py``; under
            torchrun or SLURM the launcher starts them, ``devices x num_nodes`` of them.

    Returns:
        The metrics written: ``test/{metric}``, ``{dataset}_test/{metric}``, ``{dataset}_test/{prompt}/{metric}`` for
        ``loss`` and the requested metrics (:func:`training.metrics.metric_keys`: ``snr`` brings ``snri``, ``sisnr``
        ``sisnri``); the same in every process of a run on several.

    Raises:
        EvaluationError, CheckpointError, ConfigError: one-line, user-facing problems.
    """
    if precision not in PRECISIONS:
        raise EvaluationError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    devices, num_nodes = _count(devices, "--devices"), _count(num_nodes, "--num_nodes")
    processes = devices * num_nodes
    launched = _launched()
    if processes > 1 and launched is not None and launched[1] != processes:
        raise EvaluationError(f"{launched[1]} process(es) were started ({launched[0]}={launched[1]}), but --devices "
                              f"{devices} x --num_nodes {num_nodes} is {processes}: give the processes per node as "
                              "--devices and the nodes as --num_nodes")
    names = check_metrics(metrics)  # before any model is loaded: known names, their packages importable
    keys = metric_keys(names)
    css_request = None  # the flags override css_conf; their shift defaults to half the segment
    if css_segment_size is not None or css_shift_size is not None:
        css_request = SeparationOptions.create(prompts_from_data=True, css_segment_size=css_segment_size,
                                               css_shift_size=css_shift_size)
    ckpt_path = find_model(ckpt_path)  # a bundled model's name ("tuss.demo") from any directory
    exp_dir = experiment_dir(ckpt_path)
    txt, js, audio_dir = result_paths(exp_dir, single_prompt)
    save_audio = save_audio and write
    first = first_process()
    writer = write and first  # several processes: the first checks, recovers and writes; the others only score
    if writer:  # a result swap that a killed evaluation left half-done is completed first, its leftovers removed
        recover_results(exp_dir, audio_dir)
    if writer and txt.exists() and not overwrite:
        raise EvaluationError(f"{txt} already exists; pass --overwrite to replace it")
    if writer:
        check_result_paths(exp_dir, single_prompt, save_audio)
    config = load_config(find_config(ckpt_path))
    specs = ((config.get("dataset_conf") or {}).get("test") or {}).get("json_path_and_num_data")
    if not specs:
        raise ConfigError(f"{find_config(ckpt_path)} has no dataset_conf.test.json_path_and_num_data: no test sets "
                          "to evaluate")
    accelerator, per_node = _trainer_device(device, devices)
    quiet_lightning()
    bar = progress and sys.stderr.isatty()  # a log file gets a line per test set instead of \r-redrawn bars
    shards = ShardOrder(save_audio=save_audio, first=first)  # several processes: the one-process order
    callbacks: list[pl.Callback] = [shards]
    if progress and not bar and first:
        callbacks.append(LineProgress())
    try:  # before the model is loaded: GPUs that are not there, a launcher's environment that does not fit
        trainer = pl.Trainer(accelerator=accelerator, devices=per_node, num_nodes=num_nodes,
                             strategy="ddp" if processes > 1 else "auto", use_distributed_sampler=False,
                             logger=False, enable_checkpointing=False, enable_progress_bar=bar, callbacks=callbacks,
                             enable_model_summary=False, precision=PRECISIONS[precision], default_root_dir=exp_dir)
    except (TypeError, ValueError) as err:  # MisconfigurationException is a ValueError
        raise EvaluationError(f"--devices {devices} --num_nodes {num_nodes}: {' '.join(str(err).split())}") from None
    model = load_model(ckpt_path, "cpu")
    if single_prompt and model.prompt_names is None:
        raise EvaluationError("--single_prompt needs a TUSS model; the conventional model has no prompts")
    module = SeparationModule(config, model=model)
    module.single_prompt = single_prompt
    module.metrics = tuple(n for n in names if n in EXTRA_METRICS)  # computed in the test step only when asked
    if css_request is not None:
        module.css_options = replace(css_request, css_solve_perm=module.css_options.css_solve_perm).bind(model)
    data = SeparationDataModule(config, model.prompt_names or ())
    staged = StagedFolder(exp_dir, RESULT_STAGING) if writer else None  # the new result set, swapped in as one
    try:
        saver = AudioSaver(audio_dir, staged.path / audio_dir.name) if save_audio and staged is not None else None
        module.output_hook = saver  # several processes: ShardOrder's, which gives the files their names at the end
        shards.staging = None if staged is None else staged.path
        trainer.test(module, datamodule=data, verbose=False)
        if shards.active:  # every process's records and markers, in one-process order
            records, unreadable = shards.records, shards.skipped
            results = aggregate_records(records, "test") if records else {}
        else:
            records, unreadable = module.test_records, module.test_skipped
            results = module.test_results()
        if not results:
            raise EvaluationError(f"no test mixture could be read from {[s[0] for s in specs]}")
        results = {k: v for k, v in results.items() if k.rsplit("/", 1)[-1] in keys}  # loss + the requested
        datasets = [dl.dataset for dl in trainer.test_dataloaders if isinstance(dl.dataset, FixedDataset)]
        skipped = [f"{d.name} {item_id} ({why})" for d in datasets for item_id, why in d.skipped]  # at load time
        skipped += [f"{x['manifest']} {x['skipped']} ({x['reason']})" for x in unreadable]  # unreadable
        if skipped and strict:
            raise EvaluationError(f"{len(skipped)} test mixture(s) could not be read, first: {skipped[0]} (without "
                                  "--strict they are skipped and listed in the results)")
        if skipped:
            results["test/skipped"] = float(len(skipped))
            if first:
                log.warning("%d test mixture(s) could not be read and were not scored: %s", len(skipped),
                            "; ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""))
        SKIPPED[:] = skipped
        if staged is not None:  # the result files and the audio staged, then swapped in together (result.txt last)
            csv_path, md_path, png_path = report_paths(exp_dir, single_prompt)
            files = {csv_path: lambda tmp: tmp.write_text(format_items_csv(records, keys), encoding="utf-8"),
                     md_path: lambda tmp: tmp.write_text(format_markdown(results, keys) + _skipped_note(skipped),
                                                         encoding="utf-8"),
                     png_path: lambda tmp: result_figure(results, main_metric(names))[0].savefig(tmp, format="png")}
            audio = [] if saver is None else [shards.place_audio(saver) if shards.active else saver.finish()]
            write_results(results, txt, js, extra_files=files, staged=staged, also=audio)
    except BaseException:
        if staged is not None:
            staged.discard()
        raise
    if staged is not None:
        staged.close()
    return results

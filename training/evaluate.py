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
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import lightning.pytorch as pl
import torch

from datasets.fixed import FixedDataset
from nets import load_model
from separation.options import SeparationOptions
from training.callbacks import LineProgress, quiet_lightning
from training.data import SeparationDataModule
from training.metrics import DEFAULT_EVAL_METRICS, EXTRA_METRICS, MEDIAN_METRICS, check_metrics, metric_keys
from training.module import SeparationModule
from utils.atomic import StagedFolder, fsync_file, probe_writable, write_error
from utils.audio import write_audio
from utils.checkpoint import CheckpointError, find_config, find_model
from utils.config import ConfigError, load_config
from utils.runtime import pick_device

__all__ = ["PRECISIONS", "EvaluationError", "experiment_dir", "result_paths", "report_paths", "check_result_paths",
           "format_results", "format_items_csv", "format_markdown", "main_metric", "result_figure", "write_results",
           "AudioSaver", "evaluate"]


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

    def __call__(self, info: Mapping, est: torch.Tensor, sample_rate: int) -> None:
        dataset = _safe(info["dataset"])
        index = len(self.rows[dataset])
        for j, (prompt, value) in enumerate(zip(info["prompts"], info["sisnr"], strict=True)):
            name = f"{index:04d}_{_safe(prompt)}{j}_sisnr{value:.2f}.wav"
            try:
                write_audio(self.staging / dataset / name, est[j], sample_rate, subtype="FLOAT")
            except OSError as err:  # name the file the user will look for, not the staged one
                raise write_error(err, self.out_dir / dataset / name) from None
        self.rows[dataset].append(f"{index:04d}\t{info.get('manifest')}\t{info.get('channel')}\t{info['id']}")

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


def _trainer_device(device: str | None) -> tuple[str, int | list[int]]:
    """Lightning ``(accelerator, devices)`` for a device name (default: a GPU when present)."""
    dev = pick_device(device)
    if dev.type == "cuda":
        return "gpu", [dev.index or 0]
    if dev.type == "mps":
        return "mps", 1
    return "cpu", 1


def evaluate(ckpt_path: str | os.PathLike, single_prompt: bool = False, css_segment_size: float | None = None,
             css_shift_size: float | None = None, overwrite: bool = False, device: str | None = None,
             save_audio: bool = True, progress: bool = True, precision: str = "32",
             write: bool = True, metrics: Sequence[str] = DEFAULT_EVAL_METRICS,
             strict: bool = False) -> dict[str, float]:
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

    Returns:
        The metrics written: ``test/{metric}``, ``{dataset}_test/{metric}``, ``{dataset}_test/{prompt}/{metric}`` for
        ``loss`` and the requested metrics (:func:`training.metrics.metric_keys`: ``snr`` brings ``snri``, ``sisnr``
        ``sisnri``).

    Raises:
        EvaluationError, CheckpointError, ConfigError: one-line, user-facing problems.
    """
    if precision not in PRECISIONS:
        raise EvaluationError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
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
    if write:  # a result swap that a killed evaluation left half-done is completed first, its leftovers removed
        recover_results(exp_dir, audio_dir)
    if write and txt.exists() and not overwrite:
        raise EvaluationError(f"{txt} already exists; pass --overwrite to replace it")
    if write:
        check_result_paths(exp_dir, single_prompt, save_audio)
    config = load_config(find_config(ckpt_path))
    specs = ((config.get("dataset_conf") or {}).get("test") or {}).get("json_path_and_num_data")
    if not specs:
        raise ConfigError(f"{find_config(ckpt_path)} has no dataset_conf.test.json_path_and_num_data: no test sets "
                          "to evaluate")
    accelerator, devices = _trainer_device(device)
    model = load_model(ckpt_path, "cpu")
    if single_prompt and model.prompt_names is None:
        raise EvaluationError("--single_prompt needs a TUSS model; the conventional model has no prompts")
    module = SeparationModule(config, model=model)
    module.single_prompt = single_prompt
    module.metrics = tuple(n for n in names if n in EXTRA_METRICS)  # computed in the test step only when asked
    if css_request is not None:
        module.css_options = replace(css_request, css_solve_perm=module.css_options.css_solve_perm).bind(model)
    staged = StagedFolder(exp_dir, RESULT_STAGING) if write else None  # the new result set, swapped in as one
    saver = AudioSaver(audio_dir, staged.path / audio_dir.name) if save_audio else None
    module.output_hook = saver
    data = SeparationDataModule(config, model.prompt_names or ())
    quiet_lightning()
    bar = progress and sys.stderr.isatty()  # a log file gets a line per test set instead of \r-redrawn bars
    trainer = pl.Trainer(accelerator=accelerator, devices=devices, logger=False, enable_checkpointing=False,
                         enable_progress_bar=bar, callbacks=[LineProgress()] if progress and not bar else None,
                         enable_model_summary=False, precision=PRECISIONS[precision],
                         default_root_dir=exp_dir)
    try:
        trainer.test(module, datamodule=data, verbose=False)
        results = module.test_results()
        if not results:
            raise EvaluationError(f"no test mixture could be read from {[s[0] for s in specs]}")
        results = {k: v for k, v in results.items() if k.rsplit("/", 1)[-1] in keys}  # loss + the requested
        datasets = [dl.dataset for dl in trainer.test_dataloaders if isinstance(dl.dataset, FixedDataset)]
        skipped = [f"{d.name} {item_id} ({why})" for d in datasets for item_id, why in d.skipped]  # at load time
        skipped += [f"{x['manifest']} {x['skipped']} ({x['reason']})" for x in module.test_skipped]  # unreadable
        if skipped and strict:
            raise EvaluationError(f"{len(skipped)} test mixture(s) could not be read, first: {skipped[0]} (without "
                                  "--strict they are skipped and listed in the results)")
        if skipped:
            results["test/skipped"] = float(len(skipped))
            log.warning("%d test mixture(s) could not be read and were not scored: %s", len(skipped),
                        "; ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""))
        SKIPPED[:] = skipped
        if write:  # the result files and the audio staged, then swapped in together (result.txt last)
            csv_path, md_path, png_path = report_paths(exp_dir, single_prompt)
            records = module.test_records
            files = {csv_path: lambda tmp: tmp.write_text(format_items_csv(records, keys), encoding="utf-8"),
                     md_path: lambda tmp: tmp.write_text(format_markdown(results, keys) + _skipped_note(skipped),
                                                         encoding="utf-8"),
                     png_path: lambda tmp: result_figure(results, main_metric(names))[0].savefig(tmp, format="png")}
            write_results(results, txt, js, extra_files=files, staged=staged,
                          also=[] if saver is None else [saver.finish()])
    except BaseException:
        if staged is not None:
            staged.discard()
        raise
    if staged is not None:
        staged.close()
    return results

"""Bundle a trained experiment into a model folder in the published layout (docs/architecture.md §7), ready to share.

    python -m training.bundle exp/oss/tuss.demo pretrained_models/tuss.demo
    python -m training.bundle exp/oss/tuss.demo /tmp/tuss.demo \\
        --ckpts exp/oss/tuss.demo/checkpoints/epoch=9-step=2000.ckpt
    python -m training.bundle exp/oss/tuss.demo pretrained_models/tuss.demo --config configs/demo/tuss.demo.yaml
    python -m training.bundle --card-only pretrained_models/tuss.demo     # an existing model folder

Writes, in <out>:
  hparams.yaml            the experiment's config (or --config)
  checkpoints/model.pth   a plain state dict (keys model.separator.*, no optimizer state): the element-wise average
                          of the experiment's checkpoints (those its run recorded as its top-k by the monitored
                          val/loss; never last.ckpt), or of --ckpts
  model.safetensors       the same state dict (same keys, bit-identical tensors) in the safetensors format, which
                          holds tensors only, so loading it cannot run code: the file to share
  README.md               a model card: prompts, sample rate, STFT, parameter count, training manifests and steps,
                          the averaged checkpoints, the weights it was fine-tuned from (pretrained_model_path) and
                          their licence line, the comment at the top of hparams.yaml, the last evaluation (result.md
                          of eval.py in the experiment or in <out>), and how to use the model

The bundled model is checked before anything is written: it must load strictly into the network of the config
(nets.load_model). The files are written into a hidden folder in <out>, then renamed into place together: a failed
bundle leaves <out> as it was. A README.md that this command did not write is never replaced (move it away first).

--card-only MODEL writes only model.safetensors and README.md of an existing model folder (hparams.yaml and
checkpoints/model.pth, e.g. one of pretrained_models/), beside its hparams.yaml, e.g. after eval.py --ckpt_path MODEL
wrote MODEL/result.md (the card's evaluation). The experiment, training steps and averaged checkpoints are those that
a bundle recorded in the header of MODEL/model.safetensors for the same weights; unknown otherwise (a plain state
dict does not tell).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from nets import build_model, load_weights
from utils.atomic import StagedFolder, save_torch, write_bytes, write_error, write_text
from utils.checkpoint import (
    SAFETENSORS_SUFFIX,
    CheckpointError,
    average_checkpoints,
    check_finite,
    checkpoint_files,
    find_config,
    find_model,
    read_state_dict,
    save_safetensors,
)
from utils.cli import UsageError, run_main
from utils.config import load_config

__all__ = ["bundle_model", "write_card", "model_card", "checkpoint_progress", "pretrained_licence", "config_notes",
           "CARD_MARK", "main"]

log = logging.getLogger(__name__)

#: the first line of every model card this module writes: a README.md without it is not replaced
CARD_MARK = "<!-- model card written by python -m training.bundle; rewritten by its next run -->"
#: the line of a card without ``pretrained_model_path`` (trained from scratch with this repository's code)
OWN_LICENCE = "License: same as this repository's code."
LICENCE_PREFIXES = ("License:", "Licence:")
#: the averaged checkpoints of a card: ``(name, (epoch, global_step) or None)``
Averaged = list[tuple[str, tuple[int, int] | None]]


# -- what the card says ------------------------------------------------------------------------------------------

def checkpoint_progress(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(epoch, global_step)`` of a Lightning checkpoint (read with ``weights_only=True``, memory-mapped: the
    tensors are not read), or ``None`` for a plain state dict, a ``.safetensors`` file or an unreadable file."""
    path = Path(path)
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        return None
    obj = None
    for mmap in (True, False):  # mmap needs the zip format of torch.save; older files are read in full
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            break
        except Exception:  # any reason (not a torch file, a foreign type...): the progress is unknown
            continue
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        return None
    epoch, step = obj.get("epoch"), obj.get("global_step")
    if not isinstance(epoch, int) or not isinstance(step, int):
        return None
    return epoch, step


def _licence_line(readme: Path) -> str | None:
    try:
        lines = readme.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return next((line.strip() for line in lines if line.strip().startswith(LICENCE_PREFIXES)), None)


def pretrained_licence(pretrained: str | os.PathLike, depth: int = 5) -> tuple[str, Path | None]:
    """The licence line of the weights ``pretrained`` (a ``pretrained_model_path``): the first line starting with
    ``License:`` or ``Licence:`` of the ``README.md`` of its model folder (the folder of its ``hparams.yaml``), and
    that README's path. Weights without one (an experiment of this repository, fine-tuned in turn) take the licence
    of the weights their own ``hparams.yaml`` names as ``pretrained_model_path`` (at most ``depth`` steps back).
    Else a line saying that the licence was not found and must be checked, and ``None``."""
    path = find_model(pretrained)
    config = None
    if path.exists():
        with contextlib.suppress(CheckpointError, OSError):
            config = find_config(path)
    readme = None if config is None else config.parent / "README.md"
    line = _licence_line(readme) if readme is not None and readme.is_file() else None
    if line is not None:
        return line, readme
    if config is not None and depth > 0:
        with contextlib.suppress(ValueError, OSError):
            earlier = load_config(config).get("pretrained_model_path")
            if earlier:
                found, source = pretrained_licence(earlier, depth - 1)
                if source is not None:
                    return found, source
    return (f"License: not found for the pretrained weights `{pretrained}` (no README.md with a `License:` line in "
            "their model folder); check their licence before sharing this model."), None


def config_notes(text: str) -> str | None:
    """The comment lines at the top of a config's text, without their ``#`` (``None`` when it starts with none)."""
    notes = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        notes.append(line[2:] if line.startswith("# ") else line[1:])
    return "\n".join(notes).strip("\n") or None


def _code_list(items: Sequence[object]) -> str:
    return ", ".join(f"`{i}`" for i in items) if items else "none"


def _manifests(config: Mapping, split: str) -> list[str]:
    data = (config.get("dataset_conf") or {}).get(split) or {}
    if split == "train":
        return [str(p) for p in data.get("json_paths") or []]
    return [str(spec[0]) for spec in data.get("json_path_and_num_data") or [] if spec]


def model_card(name: str, config: Mapping, state: Mapping[str, torch.Tensor], *, model_dir: str,
               experiment: str | None = None,
               averaged: Averaged | None = None,
               evaluation: tuple[str, str] | None = None, licence: str = OWN_LICENCE,
               licence_source: str | None = None, notes: str | None = None) -> str:
    """The Markdown model card (``README.md``) of a bundled model.

    Args:
        name: the model's name (its folder's name).
        config: its config (``hparams.yaml``); state: its state dict (the parameter count).
        model_dir: the folder, as the usage examples name it.
        experiment: the experiment directory it was bundled from (``None``: unknown).
        averaged: ``(checkpoint, (epoch, global_step) or None)`` of each averaged checkpoint (``None``: unknown).
        evaluation: ``(where, text of result.md)`` of the last evaluation, or ``None``.
        licence: the licence line; licence_source: the README it was copied from, if any.
        notes: the comment at the top of ``hparams.yaml`` (:func:`config_notes`), if any.
    """
    model_conf = config.get("model_conf") or {}
    enc = config.get("encoder_conf") or {}
    prompts = list(model_conf.get("prompts") or [])
    rate = model_conf.get("sample_rate") or ((config.get("dataset_conf") or {}).get("train") or {}).get("sample_rate")
    n_params = sum(v.numel() for v in state.values())
    stft = (f"{config.get('encoder_name', 'stft')}: fft size {enc.get('fft_size', '?')}, window length "
            f"{enc.get('window_length', enc.get('fft_size', '?'))} ({enc.get('window_type', '?')} window), "
            f"hop {enc.get('hop_length', '?')}")
    if prompts:
        kind = f"A prompt-conditioned source separator (`model_name: {config.get('model_name')}`)"
        prompt_text = _code_list(prompts)
    else:
        outputs = model_conf.get("num_spk")
        kind = f"A source separator without prompts (`model_name: {config.get('model_name')}`)"
        prompt_text = f"none (a fixed set of {outputs} outputs)" if outputs else "none"
    lines = [CARD_MARK, f"# {name}", "",
             f"{kind} of the TUSS repository, bundled by `python -m training.bundle`.", "",
             "## Model", "", "| | |", "| --- | --- |",
             f"| prompts | {prompt_text} |",
             f"| sample rate | {rate} Hz |" if rate else "| sample rate | unknown |",
             f"| STFT | {stft} |",
             f"| parameters | {n_params:,} (the elements of the {len(state)} tensors of the state dict) |", "",
             "Files: `hparams.yaml` (the config), `checkpoints/model.pth` (the weights as a PyTorch state dict, read "
             "with `weights_only=True`) and `model.safetensors` (the same weights in the safetensors format: tensors "
             "only, loading it cannot run code).", "",
             "## Training", ""]
    if experiment is not None:
        lines.append(f"- experiment: `{experiment}`")
    lines += [f"- training manifests: {_code_list(_manifests(config, 'train'))}",
              f"- validation manifests: {_code_list(_manifests(config, 'valid'))}",
              f"- test manifests: {_code_list(_manifests(config, 'test'))}"]
    known = [p for _, p in averaged or [] if p is not None]
    if known:
        epoch, step = max(known, key=lambda p: p[1])
        lines.append(f"- training steps: {step} (epoch {epoch}; the latest of the averaged checkpoints)")
    else:
        lines.append("- training steps: unknown (" + ("the averaged checkpoints are plain state dicts)" if averaged
                                                       else "made from a plain state dict)"))
    if averaged:
        shown = [f"`{f}`" + (f" (epoch {p[0]}, step {p[1]})" if p else "") for f, p in averaged]
        lines.append(f"- averaged checkpoints ({len(averaged)}): " + ", ".join(shown))
    else:
        lines.append("- averaged checkpoints: unknown")
    pretrained = config.get("pretrained_model_path")
    lines.append(f"- fine-tuned from: `{pretrained}`" if pretrained else
                 "- fine-tuned from: none recorded (`pretrained_model_path` is not set in `hparams.yaml`)")
    if notes:
        fence = "````" if "```" in notes else "```"
        lines += ["", "Notes (the comment at the top of `hparams.yaml`):", "", f"{fence}text", notes, fence]
    lines += ["", "## Evaluation", ""]
    if evaluation is not None:
        where, text = evaluation
        lines += [f"The last evaluation (`{where}`, written by `eval.py`):", "", text.strip()]
    else:
        lines.append(f"Not evaluated yet: `python eval.py --ckpt_path {model_dir}` writes `{model_dir}/result.md`, "
                     f"which `python -m training.bundle --card-only {model_dir}` puts here.")
    lines += ["", "## Licence", "", licence]
    if licence_source is not None:
        lines += ["", f"(The licence of the weights it was fine-tuned from, as `{licence_source}` states it.)"]
    example = prompts[:2]
    prompt_arg = f" --prompts {' '.join(example)}" if example else ""
    call = f"model(mix, [{example!r}])" if example else "model(mix)"
    lines += ["", "## Usage", "", "With the TUSS repository (from its root):", "", "```sh",
              f"python separate.py --ckpt_path {model_dir} --audio_path mix.wav{prompt_arg} --audio_output_dir out",
              "```", "", "```python", "import torch", "from nets import load_model", "",
              f'model = load_model("{model_dir}")  # or "{model_dir}/model.safetensors"; eval mode, CPU',
              f"mix = torch.randn(1, {rate or 48000})  # (batch, samples) at {rate or 48000} Hz",
              "with torch.inference_mode():",
              f"    est = {call}  # (batch, outputs, samples)",
              "```", "",
              "A folder under the repository's `pretrained_models/` is also found by its name "
              f'(`--ckpt_path {name}`, `load_model("{name}")`).', ""]
    return "\n".join(lines)


# -- writing ---------------------------------------------------------------------------------------------------

def _check_card_replaceable(readme: Path) -> None:
    if readme.is_file() and not readme.read_text(encoding="utf-8", errors="replace").startswith(CARD_MARK):
        raise CheckpointError(f"{readme} exists and was not written by python -m training.bundle; move it away "
                              "to bundle into this folder")


def _evaluation(*folders: Path, model_dir: Path) -> tuple[str, str] | None:
    """``(where, text)`` of the first ``result.md`` of ``folders``; ``where`` is ``result.md`` for the model's own."""
    for folder in folders:
        result = folder / "result.md"
        if result.is_file():
            where = "result.md" if folder == model_dir else str(result)
            return where, result.read_text(encoding="utf-8", errors="replace")
    return None


def _licence(config: Mapping) -> tuple[str, str | None]:
    pretrained = config.get("pretrained_model_path")
    if not pretrained:
        return OWN_LICENCE, None
    line, source = pretrained_licence(pretrained)
    return line, None if source is None else str(source)


def _provenance_metadata(experiment: str | None, averaged: Averaged | None) -> dict[str, str]:
    """The header entries of ``model.safetensors`` that let ``--card-only`` tell how the weights were made."""
    meta = {}
    if experiment is not None:
        meta["bundled_from"] = experiment
    if averaged is not None:
        meta["averaged"] = json.dumps([[name, *(progress or (None, None))] for name, progress in averaged])
    return meta


def _provenance(path: Path, state: Mapping[str, torch.Tensor]) -> tuple[str | None, Averaged | None]:
    """``(experiment, averaged checkpoints)`` recorded in the header of an existing ``model.safetensors`` written by
    :func:`bundle_model`, when its tensors are still those of ``state``; else ``(None, None)``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        old = read_state_dict(path)
        averaged = [(str(n), None if e is None or s is None else (int(e), int(s)))
                    for n, e, s in json.loads(meta["averaged"])] if "averaged" in meta else None
    except Exception:  # missing, unreadable, or another writer's header: the provenance is unknown
        return None, None
    if sorted(old) != sorted(state) or not all(torch.equal(old[k], state[k]) for k in state):
        return None, None  # checkpoints/model.pth was replaced since: the record is not about these weights
    return meta.get("bundled_from"), averaged


def _write_staged(out_dir: Path, files: Mapping[str, object]) -> None:
    """Write ``files`` (relative name -> ``bytes``, ``str``, a state dict for ``.pth``, ``(state dict, metadata)``
    for ``.safetensors``) into a hidden folder in ``out_dir``, then rename them into place together
    (:class:`utils.atomic.StagedFolder`)."""
    StagedFolder.recover(out_dir, ".bundle-")  # a swap a killed bundling left half-done is completed first
    with StagedFolder(out_dir, ".bundle-") as staged:
        for rel, content in files.items():
            target = staged.path / rel
            if rel.endswith(".pth"):
                save_torch(content, target)
            elif rel.endswith(SAFETENSORS_SUFFIX):
                tensors, metadata = content
                save_safetensors(tensors, target, metadata)
            elif isinstance(content, bytes):
                write_bytes(target, content)
            else:
                write_text(target, content)
        made = [d for d in {(out_dir / rel).parent for rel in files} if not d.exists()]
        try:
            for folder in made:
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as err:
                    raise write_error(err, folder, "create") from None
            staged.swap([(out_dir / rel, staged.path / rel) for rel in files])
        except BaseException:
            for folder in made:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise


def _checked(config_path: Path, state: dict[str, torch.Tensor], source: str, targets: Sequence[Path]):
    cfg = load_config(config_path)
    load_weights(build_model(cfg), state, source=source)  # strict: fails before anything is written
    for target in targets:
        check_finite(state, target)
    return cfg


def bundle_model(exp_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 ckpts: Sequence[str | os.PathLike] | None = None,
                 config: str | os.PathLike | None = None) -> Path:
    """Average checkpoints of ``exp_dir`` (or ``ckpts``) into ``out_dir/checkpoints/model.pth`` and
    ``out_dir/model.safetensors`` next to ``out_dir/hparams.yaml`` and the model card ``out_dir/README.md``
    (:func:`model_card`); returns the path of ``model.pth``. The four files replace the old ones together.

    Raises:
        CheckpointError: no checkpoints, unreadable ones, weights that do not fit the config's network, or a
            README.md in ``out_dir`` that this module did not write.
        ValueError: an unreadable config (ConfigError) or one that builds no network.
        utils.atomic.WriteError: a file could not be written (``out_dir`` is left as it was).
    """
    exp_dir, out_dir = Path(exp_dir), Path(out_dir)
    if not exp_dir.is_dir():
        raise CheckpointError(f"experiment directory not found: {exp_dir} (expected hparams.yaml and checkpoints/)")
    files = [Path(p) for p in ckpts] if ckpts else checkpoint_files(exp_dir)
    config_path = Path(config) if config is not None else find_config(exp_dir)
    state = average_checkpoints(files)
    state = {k: v.contiguous() for k, v in state.items()}
    cfg = _checked(config_path, state, " + ".join(str(p) for p in files),
                   [out_dir / "checkpoints" / "model.pth", out_dir / "model.safetensors"])
    log.info("averaged %d checkpoint(s): %s", len(files), ", ".join(p.name for p in files))
    _check_card_replaceable(out_dir / "README.md")

    def shown(p: Path) -> str:
        try:
            return p.resolve().relative_to(exp_dir.resolve()).as_posix()
        except ValueError:
            return str(p)

    licence, licence_source = _licence(cfg)
    averaged = [(shown(p), checkpoint_progress(p)) for p in files]
    card = model_card(out_dir.resolve().name, cfg, state, model_dir=str(out_dir), experiment=str(exp_dir),
                      averaged=averaged, evaluation=_evaluation(exp_dir, out_dir, model_dir=out_dir), licence=licence,
                      licence_source=licence_source, notes=config_notes(config_path.read_text(errors="replace")))
    _write_staged(out_dir, {"checkpoints/model.pth": state,
                            "model.safetensors": (state, _provenance_metadata(str(exp_dir), averaged)),
                            "hparams.yaml": config_path.read_bytes(), "README.md": card})
    return out_dir / "checkpoints" / "model.pth"


def write_card(model_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``model.safetensors`` and the model card ``README.md`` of an existing model folder (``hparams.yaml`` and
    ``checkpoints/model.pth``: one of ``pretrained_models/``) beside its ``hparams.yaml``, after the same strict check
    as :func:`bundle_model`; returns their paths. The evaluation of the card is ``model_dir/result.md``, if any; the
    experiment and the averaged checkpoints are those recorded in the header of a ``model.safetensors`` that
    :func:`bundle_model` wrote for the same weights, else unknown.

    Raises:
        CheckpointError: no hparams.yaml or checkpoints/model.pth, unreadable or unfitting weights, or a README.md
            that this module did not write.
        utils.atomic.WriteError: a file could not be written (the folder is left as it was).
    """
    model_dir = Path(model_dir)
    config_path, pth = model_dir / "hparams.yaml", model_dir / "checkpoints" / "model.pth"
    for need in (config_path, pth):
        if not need.is_file():
            raise CheckpointError(f"{model_dir} is not a model folder: {need} not found")
    state = read_state_dict(pth)
    cfg = _checked(config_path, state, str(pth), [model_dir / "model.safetensors"])
    _check_card_replaceable(model_dir / "README.md")
    licence, licence_source = _licence(cfg)
    experiment, averaged = _provenance(model_dir / "model.safetensors", state)
    card = model_card(model_dir.resolve().name, cfg, state, model_dir=str(model_dir), experiment=experiment,
                      averaged=averaged, evaluation=_evaluation(model_dir, model_dir=model_dir), licence=licence,
                      licence_source=licence_source, notes=config_notes(config_path.read_text(errors="replace")))
    _write_staged(model_dir, {"model.safetensors": (state, _provenance_metadata(experiment, averaged)),
                              "README.md": card})
    return model_dir / "model.safetensors", model_dir / "README.md"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (utils.cli: 2 for bad input, 1 for a failed write)."""
    parser = argparse.ArgumentParser(prog="python -m training.bundle", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exp_dir", nargs="?", help="experiment directory (hparams.yaml, checkpoints/)")
    parser.add_argument("out_dir", nargs="?",
                        help="output directory (hparams.yaml, checkpoints/model.pth, model.safetensors, README.md)")
    parser.add_argument("--ckpts", nargs="+", help="average these checkpoint files instead of checkpoints/*.ckpt")
    parser.add_argument("--config", help="copy this config as hparams.yaml (default: <exp_dir>/hparams.yaml)")
    parser.add_argument("--card-only", metavar="MODEL",
                        help="write only model.safetensors and README.md of this existing model folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def run() -> None:  # UsageError, CheckpointError, ConfigError, ModelLoadError: 2; a failed write: 1
        if args.card_only is not None and (args.exp_dir is not None or args.ckpts or args.config):
            raise UsageError("--card-only takes a model folder only (no EXP OUT, --ckpts or --config)")
        if args.card_only is None and (args.exp_dir is None or args.out_dir is None):
            raise UsageError("give the experiment directory and the output directory (or --card-only MODEL)")
        if args.card_only is not None:
            st, card = write_card(args.card_only)
            print(f"wrote {st} ({st.stat().st_size / 1e6:.1f} MB) and {card}")
            return
        path = bundle_model(args.exp_dir, args.out_dir, args.ckpts, args.config)
        out = Path(args.out_dir)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB), {out / 'model.safetensors'}, "
              f"{out / 'hparams.yaml'} and {out / 'README.md'}")

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())

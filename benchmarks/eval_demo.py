"""Improvement table of the demo models on the demo corpus's fixed test mixtures (README "Demo results").

    python benchmarks/eval_demo.py                       # bundled tuss.demo and conventional.demo, test split
    python benchmarks/eval_demo.py --models exp/oss/tuss.demo --split valid --output /tmp/table.md

For every mixture of ``demo_{cass,mss,ss,uss,se}.json`` the model is run with the mixture's own prompts (the
conventional model without prompts; its outputs are matched to the references by SI-SNR, TUSS outputs only among
equal prompts) and, per reference, the improvements ``SNR(est, ref) - SNR(mix, ref)`` and ``SI-SNR(est, ref) -
SI-SNR(mix, ref)`` are recorded. The table lists their means per task and prompt; a task's row is the mean over its
prompts. Extra rows (TUSS models only):

* ``musicbg vs stems``: on the MSS and CASS test mixtures, the SNR between the ``musicbg`` output (prompts ``musicbg``
  on MSS mixtures, ``speech sfxbg musicbg`` on CASS mixtures) and the sum of the four outputs of prompts ``drums bass
  vocals other`` on the same mixture: high when the prompts steer the model to consistent decompositions;
* ``uss, N sfx``: SI-SNR improvement on the USS mixtures with N effects (``sfx sfx`` for N = 2).

Writes the Markdown table to stdout (and ``--output``), the numbers to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.fixed import FixedDataset  # noqa: E402
from nets import load_model  # noqa: E402
from utils.checkpoint import find_config  # noqa: E402
from utils.lightning_module import SeparationModule  # noqa: E402
from utils.losses import NegSISNR, PITLoss, prompt_groups  # noqa: E402
from utils.metrics import si_snr, snr  # noqa: E402

TASKS = ("cass", "mss", "ss", "uss", "se")
STEMS = ["drums", "bass", "vocals", "other"]
DEFAULT_MODELS = ("pretrained_models/tuss.demo/checkpoints/model.pth",
                  "pretrained_models/conventional.demo/checkpoints/model.pth")


def improvements(est: torch.Tensor, refs: torch.Tensor, mix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SNR and SI-SNR improvements in dB of matched estimates: ``est, refs (s, n)``, ``mix (n,)`` -> two ``(s,)``."""
    mixes = mix.expand_as(refs)
    return snr(est, refs) - snr(mixes, refs), si_snr(est, refs) - si_snr(mixes, refs)


def match(est: torch.Tensor, refs: torch.Tensor, prompts: Sequence[str] | None) -> torch.Tensor:
    """Reorder ``est (s_out, n)`` to ``refs (s, n)`` by SI-SNR: only among equal ``prompts`` (TUSS), or over all
    outputs when ``prompts`` is None (conventional model, ``s_out >= s``). Returns ``(s, n)``."""
    groups = None if prompts is None else prompt_groups([prompts])
    result = PITLoss(NegSISNR())(est[None], refs[None], groups)
    return result.est[0, : refs.shape[0]]


class DemoModel:
    """A loaded model with its config: ``run(mix (n,), prompts, sample_rate) -> (s, n)`` at the mixture's rate."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        model = load_model(path)
        self.module = SeparationModule(find_config(path) if Path(path).is_file() else Path(path) / "hparams.yaml",
                                       model=model).eval()
        self.tuss = getattr(model, "prompt_names", None) is not None
        self.name = Path(find_config(path) if Path(path).is_file() else Path(path) / "hparams.yaml").parent.name

    @torch.inference_mode()
    def run(self, mix: torch.Tensor, prompts: Sequence[str] | None, sample_rate: int) -> torch.Tensor:
        """Separate one mixture ``(n,)`` with ``prompts`` (ignored by the conventional model)."""
        return self.module.separate(mix[None], [list(prompts)] if self.tuss else None, sample_rate)[0]


def evaluate(model: DemoModel, json_dir: Path, split: str = "test", num: int | None = None) -> dict[str, float]:
    """Mean improvements ``{"<task>/<prompt>/{snri,sisnri}", "<task>/{snri,sisnri}", ...}`` plus, for TUSS, the
    ``musicbg_vs_stems/<task>`` SNRs and ``uss/<N>src/sisnri``."""
    per: dict[str, list[float]] = defaultdict(list)
    for task in TASKS:
        data = FixedDataset(json_dir / f"demo_{task}.json", num_data=num, split=split, sort_by_length=False)
        for index in range(len(data)):
            item = data[index]
            mix, refs, prompts, sr = item["mix"], item["refs"], item["prompts"], item["sample_rate"]
            est = match(model.run(mix, prompts, sr), refs, prompts if model.tuss else None)
            d_snr, d_sisnr = improvements(est, refs, mix)
            for p, a, b in zip(prompts, d_snr.tolist(), d_sisnr.tolist(), strict=True):
                per[f"{task}/{p}/snri"].append(a)
                per[f"{task}/{p}/sisnri"].append(b)
                if task == "uss":
                    per[f"uss/{len(prompts)}src/sisnri"].append(b)
            if model.tuss and task in ("mss", "cass"):
                bg_prompts = ["musicbg"] if task == "mss" else prompts
                bg = model.run(mix, bg_prompts, sr)[bg_prompts.index("musicbg")]
                stems = model.run(mix, STEMS, sr).sum(0)
                per[f"musicbg_vs_stems/{task}"].append(float(snr(bg, stems)))
    out = {k: sum(v) / len(v) for k, v in per.items()}
    for task in TASKS:
        for metric in ("snri", "sisnri"):
            keys = [k for k in out if k.startswith(f"{task}/") and k.endswith(f"/{metric}") and "src/" not in k]
            out[f"{task}/{metric}"] = sum(out[k] for k in keys) / len(keys)
    return out


def table(results: dict[str, dict[str, float]], split: str = "test") -> str:
    """Markdown table: rows task / prompt, two columns (SNRi, SI-SNRi) per model."""
    names = list(results)
    head = "| task | prompt | " + " | ".join(f"{n} SNRi | {n} SI-SNRi" for n in names) + " |"
    lines = [head, "| " + " | ".join(["---"] * (2 + 2 * len(names))) + " |"]

    def row(label: str, prompt: str, key: str, metrics: Sequence[str] = ("snri", "sisnri")) -> None:
        cells = []
        for n in names:
            for m in metrics:
                v = results[n].get(f"{key}/{m}" if m else key)
                cells.append("–" if v is None else f"{v:.2f}")
        lines.append(f"| {label} | {prompt} | " + " | ".join(cells) + " |")

    first = results[names[0]]
    for task in TASKS:
        prompts = list(dict.fromkeys(k.split("/")[1] for k in first if k.startswith(f"{task}/") and "src" not in k
                                     and k.count("/") == 2))
        row(f"**{task}**", "**mean**", task)
        for p in prompts:
            row("", p, f"{task}/{p}")
    for n_src in (2, 3, 4):
        row("uss", f"{n_src} sfx (SI-SNRi only)", f"uss/{n_src}src", metrics=("", "sisnri"))
    lines.append("")
    for n in names:
        for task in ("mss", "cass"):
            v = results[n].get(f"musicbg_vs_stems/{task}")
            if v is not None:
                lines.append(f"- {n}: SNR(musicbg output, sum of drums/bass/vocals/other outputs) on {task.upper()} "
                             f"{split} mixtures: {v:.2f} dB")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                        help=".pth/.ckpt files or experiment directories (config: hparams.yaml)")
    parser.add_argument("--names", nargs="+", default=None,
                        help="column names of the models (default: the name of each experiment directory)")
    parser.add_argument("--json_dir", type=Path, default=Path("datasets/json_files"),
                        help="folder of demo_{cass,mss,ss,uss,se}.json")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--num", type=int, default=None, help="first N mixtures per task (default: all)")
    parser.add_argument("--output", type=Path, default=None, help="also write the Markdown table here")
    parser.add_argument("--json", type=Path, default=None, help="write all numbers as JSON here")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for task in TASKS:
        if not (args.json_dir / f"demo_{task}.json").is_file():
            parser.error(f"--json_dir {args.json_dir}: no demo_{task}.json (build it: bash dataprep/prepare_demo.sh)")
    if args.names is not None and len(args.names) != len(args.models):
        parser.error(f"--names: {len(args.names)} name(s) for {len(args.models)} model(s); give one per model")
    results = {}
    for i, path in enumerate(args.models):
        if not Path(path).exists():
            parser.error(f"--models: {path} does not exist (expected a .pth/.ckpt file or an experiment directory)")
        model = DemoModel(path)
        results[args.names[i] if args.names else model.name] = evaluate(model, args.json_dir, args.split, args.num)
    text = table(results, args.split)
    print(text, end="")
    if args.output:
        args.output.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

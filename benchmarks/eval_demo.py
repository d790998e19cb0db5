"""Improvement table of the demo models on the demo corpus's fixed test mixtures (docs/results.md).

    python benchmarks/eval_demo.py                  # bundled tuss.demo and conventional.demo
    python benchmarks/eval_demo.py --models exp/oss/tuss.demo pretrained_models/conventional.demo/checkpoints/model.pth

The per-task and per-prompt numbers are ``eval.py``'s: for each model this runs the evaluation of ``python eval.py
--ckpt_path <model> --no_audio`` (the same code, without writing ``result.json``) and reads its ``demo_<task>_test/``
keys. There every mixture of the config's test sets (``demo_{cass,mss,ss,uss,se}.json``) is separated with its own
prompts (the conventional model without prompts; its outputs are matched to the references over all outputs, TUSS
outputs only among equal prompts) and, per reference, the improvements ``snri = SNR(est, ref) - SNR(mix, ref)`` and
``sisnri`` (the same for SI-SNR) are recorded; a prompt's row is the mean over its references, a task's row is
eval.py's ``demo_<task>_test/<metric>``: the mean over mixtures of each mixture's mean over its references.

Extra rows, computed here (TUSS models only):

* ``musicbg vs stems``: on the MSS and CASS test mixtures, the SNR between the ``musicbg`` output (prompts ``musicbg``
  on MSS mixtures, ``speech sfxbg musicbg`` on CASS mixtures) and the sum of the four outputs of prompts ``drums bass
  vocals other`` on the same mixture: high when the prompts steer the model to consistent decompositions;
* ``uss, N sfx``: SI-SNR improvement on the USS mixtures with N effects (``sfx sfx`` for N = 2), outputs matched by
  SI-SNR.

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
from training.evaluate import evaluate as run_eval  # noqa: E402
from training.metrics import match, score, snr  # noqa: E402
from training.module import SeparationModule  # noqa: E402
from utils.checkpoint import find_config  # noqa: E402
from utils.config import load_config  # noqa: E402

TASKS = ("cass", "mss", "ss", "uss", "se")
STEMS = ["drums", "bass", "vocals", "other"]
DEFAULT_MODELS = ("pretrained_models/tuss.demo/checkpoints/model.pth",
                  "pretrained_models/conventional.demo/checkpoints/model.pth")


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


def eval_results(path: str | Path) -> dict[str, float]:
    """eval.py's metrics of ``path`` (the evaluation of ``python eval.py --ckpt_path <path> --no_audio``), computed
    here without writing result files."""
    print(f"evaluating {path} (as python eval.py --ckpt_path {path} --no_audio) ...", file=sys.stderr)
    return run_eval(path, device="cpu", save_audio=False, progress=False, write=False)


def task_metrics(results: dict[str, float]) -> dict[str, float]:
    """``demo_<task>_test/[<prompt>/]<metric>`` of eval.py -> ``<task>/[<prompt>/]<metric>`` for the improvements."""
    out = {}
    for key, value in results.items():
        head, _, rest = key.partition("/")
        if head.startswith("demo_") and head.endswith("_test") and rest.rsplit("/", 1)[-1] in ("snri", "sisnri"):
            out[f"{head[len('demo_'):-len('_test')]}/{rest}"] = value
    return out


def extras(model: DemoModel, test_sets: dict[str, str]) -> dict[str, float]:
    """TUSS only: ``musicbg_vs_stems/{mss,cass}`` SNRs and ``uss/<N>src/sisnri`` on the test mixtures of
    ``test_sets`` (task -> manifest)."""
    per: dict[str, list[float]] = defaultdict(list)
    if not model.tuss:
        return {}
    for task in ("uss", "mss", "cass"):
        if task not in test_sets:
            continue
        data = FixedDataset(test_sets[task], split="test", sort_by_length=False)
        for index in range(len(data)):
            item = data[index]
            mix, refs, prompts, sr = item["mix"], item["refs"], item["prompts"], item["sample_rate"]
            if task == "uss":
                est = match(model.run(mix, prompts, sr), refs, prompts)
                per[f"uss/{len(prompts)}src/sisnri"] += score(est, refs, mix)["sisnri"].tolist()
                continue
            bg_prompts = ["musicbg"] if task == "mss" else prompts
            bg = model.run(mix, bg_prompts, sr)[bg_prompts.index("musicbg")]
            stems = model.run(mix, STEMS, sr).sum(0)
            per[f"musicbg_vs_stems/{task}"].append(float(snr(bg, stems)))
    return {k: sum(v) / len(v) for k, v in per.items()}


def test_sets(path: str | Path) -> dict[str, str]:
    """task -> manifest of the demo test sets in the model's config (``dataset_conf.test``)."""
    config = load_config(find_config(path))
    specs = ((config.get("dataset_conf") or {}).get("test") or {}).get("json_path_and_num_data") or []
    return {Path(spec[0]).stem[len("demo_"):]: spec[0] for spec in specs if Path(spec[0]).stem.startswith("demo_")}


def table(results: dict[str, dict[str, float]]) -> str:
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
                             f"test mixtures: {v:.2f} dB")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                        help=".pth/.ckpt files or experiment directories (config: hparams.yaml)")
    parser.add_argument("--names", nargs="+", default=None,
                        help="column names of the models (default: the name of each experiment directory)")
    parser.add_argument("--output", type=Path, default=None, help="also write the Markdown table here")
    parser.add_argument("--json", type=Path, default=None, help="write all numbers as JSON here")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.names is not None and len(args.names) != len(args.models):
        parser.error(f"--names: {len(args.names)} name(s) for {len(args.models)} model(s); give one per model")
    results = {}
    for i, path in enumerate(args.models):
        if not Path(path).exists():
            parser.error(f"--models: {path} does not exist (expected a .pth/.ckpt file or an experiment directory)")
        sets = test_sets(path)
        missing = [t for t in TASKS if t not in sets or not Path(sets[t]).is_file()]
        if missing:
            parser.error(f"--models {path}: its config's test sets lack the demo manifests of {', '.join(missing)} "
                         "(build them: bash dataprep/prepare_demo.sh)")
        model = DemoModel(path)
        results[args.names[i] if args.names else model.name] = {**task_metrics(eval_results(path)),
                                                                **extras(model, sets)}
    text = table(results)
    print(text, end="")
    if args.output:
        args.output.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

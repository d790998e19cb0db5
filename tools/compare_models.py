"""Compare two models' outputs on the test mixtures of manifests, prompt for prompt: how many are bit-identical,
and the largest difference otherwise (docs/finetuning.md: a model fine-tuned with everything frozen but its new
prompts separates every pretrained prompt exactly as before).

    python tools/compare_models.py pretrained_models/tuss.demo exp/piano/prompt datasets/json_files/demo_*.json

Each mixture is separated once by each model with the prompts of its references (``speech_1`` -> ``speech``), on the
CPU in float32 (the same inference path for both). Exit status 0 when every output is bit-identical, 1 otherwise, 2
for bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repository's packages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/compare_models.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_a", help="a model (folder, checkpoint or bundled name)")
    parser.add_argument("model_b", help="the other model")
    parser.add_argument("manifests", nargs="+", type=Path, help="manifests with test mixtures")
    parser.add_argument("--split", default="test", help="the split of the manifests (default: test)")
    args = parser.parse_args(argv)

    import torch
    from tqdm import tqdm

    from datasets.manifest import known_prompts, load_manifest, ref_prompt
    from nets import load_model
    from utils.audio import read_audio
    from utils.cli import run_main

    def run() -> int:
        a, b = load_model(args.model_a), load_model(args.model_b)
        prompts = known_prompts(a.prompt_names or (), b.prompt_names or ())
        items = [(m, item_id, e) for m in args.manifests
                 for item_id, e in load_manifest(m, prompts=prompts).split(args.split).items()]
        same = total = 0
        worst = 0.0
        for _, _, entry in tqdm(items, desc="mixtures", disable=not sys.stderr.isatty()):
            wave, _ = read_audio(entry["mix"])
            mix = torch.from_numpy(wave[:1])
            names = [[ref_prompt(k) for k in entry["ref"]]]
            with torch.inference_mode():
                est_a, est_b = a(mix, names), b(mix, names)
            for j in range(est_a.shape[1]):
                total += 1
                if torch.equal(est_a[0, j], est_b[0, j]):
                    same += 1
                else:
                    worst = max(worst, float((est_a[0, j] - est_b[0, j]).abs().max()))
        print(f"{same} of {total} outputs bit-identical ({len(items)} mixtures of {len(args.manifests)} manifest(s))"
              + (f"; largest difference {worst:.3g}" if same < total else ""))
        return 0 if same == total else 1

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())

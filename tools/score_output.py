"""Score one output of a model against one reference, on the fixed mixtures of a manifest as they are (their
``mix`` files): how well a prompt extracts a source, also a prompt the source is not named by (docs/finetuning.md:
the demo model's ``other`` output scored against the piano it has no prompt for).

    python tools/score_output.py tuss.demo datasets/json_files/demo_piano.json \\
        --prompts drums bass vocals other --output other --reference piano_1
    python tools/score_output.py exp/piano/whole datasets/json_files/demo_piano.json \\
        --prompts drums bass vocals other piano --output piano --reference piano_1

Each mixture (its ``mix`` file at its own rate, channel 0) is separated once with ``--prompts``, as eval.py
separates (resampled to the model's rate and back); the output ``--output`` (the first of that prompt) is scored
against the reference ``--reference`` with the project's metrics (training.metrics.score: SNR and SI-SNR, and their
improvements over the mixture). Prints the means over the mixtures. eval.py scores every output of a model prompted
with the references' own prompts, on the sum of the references; this scores one output, with any prompts, on the
mixture as given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repository's packages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/score_output.py", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model (folder, checkpoint or bundled name)")
    parser.add_argument("manifest", type=Path, help="a manifest with fixed mixtures (each with a mix file)")
    parser.add_argument("--prompts", nargs="+", required=True, help="the prompts of every call")
    parser.add_argument("--output", required=True, help="the prompt (one of --prompts) whose output is scored")
    parser.add_argument("--reference", required=True, help="the reference key it is scored against (piano_1)")
    parser.add_argument("--split", default="test", help="the manifest's split (default: test)")
    args = parser.parse_args(argv)

    def run() -> int:
        import torch
        from tqdm import tqdm

        from datasets.manifest import ManifestError, known_prompts, load_manifest, ref_prompt
        from nets import load_model
        from training.metrics import score
        from utils.audio import read_audio, resample
        from utils.cli import UsageError

        if args.output not in args.prompts:
            raise UsageError(f"--output {args.output} is not one of --prompts {' '.join(args.prompts)}")
        model = load_model(args.model)
        model.check_prompts([args.prompts], 1)
        accepted = known_prompts(args.prompts, model.prompt_names or (), [ref_prompt(args.reference)])
        items = load_manifest(args.manifest, prompts=accepted).split(args.split)
        if not items:
            raise ManifestError(f"{args.manifest} has no {args.split} mixtures")
        j = args.prompts.index(args.output)
        totals: dict[str, float] = {}
        for item_id, entry in tqdm(items.items(), desc="mixtures", disable=not sys.stderr.isatty()):
            if "mix" not in entry or args.reference not in entry["ref"]:
                raise ManifestError(f"{args.manifest}: mixture {item_id} has no mix file or no reference "
                                    f"{args.reference!r} (it has: {', '.join(entry['ref'])})")
            mix, rate = read_audio(entry["mix"], channel=0)
            ref, _ = read_audio(entry["ref"][args.reference], channel=0)
            x = torch.from_numpy(mix)
            with torch.inference_mode():
                est = resample(model(resample(x, rate, model.sample_rate), [args.prompts]), model.sample_rate, rate)
            n = x.shape[-1]
            est = torch.nn.functional.pad(est[0, j:j + 1, :n], (0, max(0, n - est.shape[-1])))
            for key, value in score(est, torch.from_numpy(ref)[:, :n], x[0]).items():
                totals[key] = totals.get(key, 0.0) + float(value[0])
        means = {k: v / len(items) for k, v in totals.items()}
        print(f"{args.model}: output {args.output} of {' '.join(args.prompts)} vs {args.reference}, "
              f"{len(items)} mixtures of {args.manifest}: " + ", ".join(f"{k} {means[k]:.2f} dB" for k in
                                                                        ("sisnri", "snri", "sisnr", "snr")))
        return 0

    from utils.cli import run_main

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A web page for separation: upload or record audio, choose a model and the sources, listen to the stems.

Examples (run from the repository root):
  python app.py                                        # the bundled models on http://127.0.0.1:7860
  python app.py --ckpt_path tuss.medium.2-4src tuss.demo --port 8080
  python app.py --host 0.0.0.0 --concurrency 2         # reachable from other machines: anyone can use it

The page runs what separate.py runs (the same Separator and options; for the same model, prompts and file, the same
stems). Each model is loaded once, at start. The Separate button is also an API endpoint (/separate) for
gradio_client; docs/app.md describes the page, its options, scripted use and its security notes.

Errors: one line "error: ..." on stderr; exit 2 for a usage error (bad option value, unusable model), 1 for a failure
while serving (the port in use).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.cli import UsageError, run_main

ROOT = Path(__file__).resolve().parent
PRETRAINED = ROOT / "pretrained_models"
#: the default model, offered first (the page's default, as separate.py's)
DEFAULT_MODEL = "tuss.demo"
#: hosts that only this machine reaches
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def bundled_models() -> list[str]:
    """Every model folder under ``pretrained_models/`` (``hparams.yaml`` and ``checkpoints/``), by name, the
    bundled demo model first."""
    names = sorted(d.name for d in PRETRAINED.iterdir() if (d / "hparams.yaml").is_file()
                   and (d / "checkpoints").is_dir()) if PRETRAINED.is_dir() else []
    return sorted(names, key=lambda n: n != DEFAULT_MODEL)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python app.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_path", nargs="+", help="the model(s) the page offers, the first the default: what "
                   "separate.py --ckpt_path takes (a bundled model's name, a .pth/.ckpt/.safetensors file or an "
                   "experiment directory); default: every model folder under pretrained_models/ (today tuss.demo "
                   "and conventional.demo)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                   "only); any other (0.0.0.0: every interface) lets anyone who can reach it use the page")
    p.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public link through Gradio's share servers "
                   "(needs the internet; anyone with the link can use the page); off by default")
    p.add_argument("--device", help="cpu, cuda, cuda:1 or mps (default: a GPU when present)")
    p.add_argument("--max_upload_mb", type=float, default=200, help="largest upload accepted, in megabytes "
                   "(default 200, of 2**20 bytes: about 18 minutes of 48 kHz stereo 16-bit wav)")
    p.add_argument("--concurrency", type=int, default=1, help="separations run at once; the others wait in the "
                   "queue (default 1, right for a CPU)")
    return p


def check_args(args: argparse.Namespace) -> list[str]:
    """The option values checked before anything is imported; returns the models to load.

    Raises:
        UsageError: naming the option.
    """
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be 1..65535, got {args.port}")
    if not args.max_upload_mb > 0 or args.max_upload_mb == float("inf"):
        raise UsageError(f"--max_upload_mb must be a number of megabytes > 0, got {args.max_upload_mb:g}")
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}")
    models = args.ckpt_path or bundled_models()
    if not models:
        raise UsageError(f"no model folder under {PRETRAINED} and no --ckpt_path given")
    for model in models:
        bundled = "/" not in model and (PRETRAINED / model / "hparams.yaml").is_file()
        if not bundled and not Path(model).exists():
            raise UsageError(f"--ckpt_path {model}: no such file, folder or bundled model (bundled: "
                             f"{', '.join(bundled_models()) or 'none'})")
    if len(set(models)) != len(models):
        raise UsageError("--ckpt_path names a model twice")
    return models


def run(args: argparse.Namespace) -> int:
    """Check the options, load the models, serve the page until Ctrl+C (or SIGTERM)."""
    models = check_args(args)
    if args.host not in LOCAL_HOSTS:
        print(f"warning: --host {args.host}: anyone who can reach this address can use the page (upload files and "
              "run separations on this machine)", file=sys.stderr)
    if args.share:
        print("warning: --share: anyone with the public link can use the page", file=sys.stderr)
    if args.device is not None:  # a bad device name before any model is loaded
        from utils.runtime import pick_device

        pick_device(args.device)
    from separation.webapp import Models, serve
    from utils.runtime import configure_cpu_allocator

    configure_cpu_allocator()
    print(f"loading {', '.join(models)} ...", flush=True)
    loaded = Models(models, device=args.device)

    def ready(url: str) -> None:
        print(f"TUSS web page: {url} (models: {', '.join(loaded.labels)}; Ctrl+C stops it)", flush=True)

    serve(loaded, host=args.host, port=args.port, share=args.share, max_upload_mb=args.max_upload_mb,
          concurrency=args.concurrency, ready=ready)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line: exit 0, 2 (usage error) or 1 (failure while serving), see utils.cli."""
    args = build_parser().parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Separate audio files with a TUSS (or conventional) model.

Examples (run from the repository root):
  python separate.py                                   # the bundled example with the bundled demo model
  python separate.py --ckpt_path pretrained_models/tuss.medium.2-4src/checkpoints/model.pth \\
      --audio_path song.flac --prompts drums bass vocals other --audio_output_dir out
  python separate.py --audio_path movie.wav --task cass --css_segment_size 8 --css_shift_size 4
  python separate.py --audio_path a.wav b.mp3 folder/ --prompts speech sfx sfx musicbg --ref_channel 0
  python separate.py --backend onnxruntime --ckpt_path tuss.onnx --audio_path a.wav --task cass   # ONNX Runtime
  torchrun --nproc_per_node 4 separate.py --audio_path corpus/ --task se --audio_output_dir out   # 4 processes

A multi-channel input gives multi-channel stems (each channel separated on its own, as the authors' evaluation does
for MSS); --ref_channel N separates one channel only (mono stems).

Task presets (--task): se = speech sfxbg; ss = speech speech; uss = sfx sfx sfx; mss = drums bass vocals other;
cass = speech sfxbg musicbg. Outputs: <audio_output_dir>/wav/mix.wav and <prompt><i>.wav (speech0.wav, sfx1.wav, ...)
at the input's rate and length, and <audio_output_dir>/spectrogram/*.png. An input must be at least one STFT window
of the model long (e.g. 1024 samples at 48 kHz for the demo model).

Many files (folders, searched recursively; --file_list; --manifest; or several paths): each input's outputs go to
<audio_output_dir>/<its path relative to the inputs' common folder, without extension>/; separation_log.jsonl there
gets a line per file; a rerun skips the files done (--overwrite redoes them); an unusable file is logged and
skipped, and the run exits 1 at the end. Under torchrun or srun the files are shared out over the processes
(balanced by duration, one GPU each).

Errors: one line "error: ..." on stderr; exit 2 for a usage or input error (bad option value, unusable file or
output folder, unknown prompt), 1 for a failure while writing (full disk, permission) or a corpus with failed
files. A failed file's outputs are never half-written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from separation.options import BACKENDS, TASK_PRESETS, SeparationError, SeparationOptions
from utils.cli import UsageError, run_main

if TYPE_CHECKING:
    from separation.separator import Separator, separate_file

__all__ = ["Separator", "separate_file", "main"]


def __getattr__(name: str):
    """``Separator`` and ``separate_file`` (:mod:`separation.separator`), imported on first use: ``--help`` and
    option errors answer before torch is imported."""
    if name in ("Separator", "separate_file"):
        from separation import separator

        return getattr(separator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ROOT = Path(__file__).resolve().parent
BUNDLED_MODEL = ROOT / "pretrained_models" / "tuss.demo" / "checkpoints" / "model.pth"
BUNDLED_EXAMPLE = ROOT / "examples" / "demo_cass.wav"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python separate.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_path", help="model: .pth, .ckpt, .safetensors or experiment directory (averaged), a "
                   "bundled model's name (tuss.demo, conventional.demo: found under pretrained_models/ from any "
                   "directory), or an .onnx graph with --backend onnxruntime; default: the bundled demo model")
    p.add_argument("--backend", choices=list(BACKENDS), default="pytorch", help="run the model with "
                   "PyTorch (default) or ONNX Runtime (an .onnx model from python -m nets.onnx)")
    p.add_argument("--audio_path", nargs="+", help="audio file(s) or folder(s), searched recursively (wav, flac, "
                   "ogg, mp3, any rate); default: the bundled example")
    p.add_argument("--file_list", help="a text file of input paths, one a line (relative to the list; # comments)")
    p.add_argument("--manifest", help="a project manifest (.json): its mixture files")
    p.add_argument("--overwrite", action="store_true", help="separate again the files of a corpus whose outputs "
                   "are already in place (default: a rerun skips them)")
    p.add_argument("--prompts", nargs="+", help="sources to extract, in order (e.g. speech sfx sfx musicbg)")
    p.add_argument("--task", choices=sorted(TASK_PRESETS), help="prompt preset (see above); default cass")
    p.add_argument("--audio_output_dir", default="audio_outputs", help="output folder (default: ./audio_outputs)")
    p.add_argument("--css_segment_size", type=float, help="chunk-wise processing: segment length in seconds (> 0, "
                   "at least one STFT window of the model)")
    p.add_argument("--css_shift_size", type=float, help="chunk-wise processing: shift in seconds (default: half "
                   "the segment)")
    p.add_argument("--css_batch_size", type=int, default=1, help="segments per forward pass (default 1)")
    p.add_argument("--css_solve_perm", action="store_true", help="align outputs that share a prompt between "
                   "segments")
    p.add_argument("--start_time", type=float, help="process from this time (seconds)")
    p.add_argument("--end_time", type=float, help="process up to this time (seconds)")
    p.add_argument("--ref_channel", type=int, default=None, help="separate only this channel of a multi-channel "
                   "file (mono stems); default: every channel, each separated on its own (stereo in, stereo out)")
    p.add_argument("--all_channels", action="store_true", help="separate every channel (the default; kept for "
                   "scripts written for the authors' command line)")
    p.add_argument("--residual", action="store_true", help="also write residual.wav = mixture - sum of the stems")
    p.add_argument("--format", choices=["wav", "flac"], default="wav", help="output format (default wav)")
    p.add_argument("--bit_depth", type=int, choices=[16, 24, 32], default=16, help="16, 24 or 32 (float, wav "
                   "only); default 16")
    p.add_argument("--no_spectrograms", action="store_true", help="skip the spectrogram PNGs")
    p.add_argument("--device", help="cpu, cuda, cuda:1 or mps (default: a GPU when present)")
    p.add_argument("--strict", action="store_true", help="refuse a truncated file (fewer frames than its header "
                   "declares) instead of separating what can be read with a warning")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def check_flags(args: argparse.Namespace) -> None:
    """Refuse combinations of flags that cannot go together (:class:`UsageError`); the values themselves are
    checked once, against the loaded model, by :meth:`separation.separator.Separator.options`."""
    if args.ref_channel is not None and args.all_channels:
        raise UsageError("give either --ref_channel N (one channel) or --all_channels (every channel), not both")
    if args.prompts and args.task:
        raise UsageError("give either --prompts or --task, not both")
    if args.backend == "onnxruntime" and args.ckpt_path is None:
        raise UsageError("--backend onnxruntime needs --ckpt_path MODEL.onnx (export one with python -m "
                         "nets.onnx CKPT MODEL.onnx)")


def main(argv: list[str] | None = None) -> int:
    """The command line: exit 0, 2 (usage, config or input error) or 1 (failure while writing), see utils.cli."""
    args = build_parser().parse_args(argv)
    return run_main(lambda: run(args))


def channel_note(channels: int, channel: int | None) -> str:
    """What was done with the ``channels`` of an input, for the command line's report."""
    if channels == 1:
        return "mono"
    if channel is None:
        return f"each of its {channels} channels separated ({channels}-channel stems; --ref_channel N for one)"
    return f"channel {channel} of {channels} separated (mono stems)"


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Separate every input of the parsed command line.

    Everything is checked before the model runs, each thing once: the flags and option values
    (:meth:`SeparationOptions.create`), every input's header, cut and channel and every output folder
    (:func:`separation.separator.prepare_file`; with ``--strict``, that no input is truncated), then, the model
    loaded, the prompts and chunk sizes against it (:meth:`Separator.bind`) and every cut's length.

    Raises:
        UsageError, SeparationError (and the other ``ValueError`` s of the project): usage or input errors.
        OSError (:class:`utils.atomic.WriteError`): the outputs could not be written.
    """
    check_flags(args)
    options = SeparationOptions.create(
        prompts=args.prompts or TASK_PRESETS[args.task or "cass"], css_segment_size=args.css_segment_size,
        css_shift_size=args.css_shift_size, css_batch_size=args.css_batch_size, css_solve_perm=args.css_solve_perm,
        start_time=args.start_time, end_time=args.end_time, ref_channel=args.ref_channel,
        all_channels=args.all_channels, fmt=args.format, bit_depth=args.bit_depth, residual=args.residual,
        spectrograms=not args.no_spectrograms, strict=args.strict)
    if args.device is not None:  # a bad device name before any file is read
        from utils.runtime import pick_device

        pick_device(args.device)
    ckpt = args.ckpt_path
    if ckpt is None:
        if not BUNDLED_MODEL.is_file():
            raise SeparationError(f"no --ckpt_path given and the bundled demo model is missing ({BUNDLED_MODEL}); "
                                  "pass --ckpt_path")
        ckpt = BUNDLED_MODEL
    given = args.audio_path or args.file_list or args.manifest
    if not given and not BUNDLED_EXAMPLE.is_file():
        raise SeparationError(f"no --audio_path given and the bundled example is missing ({BUNDLED_EXAMPLE})")
    from separation.corpus import collect_inputs, separate_corpus

    inputs, corpus = collect_inputs(args.audio_path or ([] if given else [str(BUNDLED_EXAMPLE)]), args.file_list,
                                    args.manifest)
    from separation.separator import output_names, prepare_file
    from utils.runtime import configure_cpu_allocator

    def make_separator(model, device):
        return sys.modules[__name__].Separator(model, device=device, backend=args.backend)  # tests stub it

    if corpus:  # many files: mirrored outputs, done files skipped, a log, sharded over a job's processes
        configure_cpu_allocator()
        return separate_corpus(inputs, Path(args.audio_output_dir), options, str(ckpt), make_separator,
                               device=args.device, overwrite=args.overwrite, quiet=args.quiet, warn=warn)
    jobs = [prepare_file(inputs[0], Path(args.audio_output_dir), options)]  # header, cut, channel, output folder
    configure_cpu_allocator()
    separator = make_separator(ckpt, args.device)
    if separator.prompt_names is None and (args.prompts or args.task):
        print("note: this model has no prompts; --prompts/--task are ignored", file=sys.stderr)
    options = separator.bind(options)  # the prompts and chunk sizes against the model
    for job in jobs:
        separator.check_length(job.num_samples, job.sample_rate, job.name)
    count = separator.num_outputs(options.prompts)
    for job in jobs:
        written = separator.run_file(job, options, progress=not args.quiet, warn=warn)
        if not args.quiet:
            stems = " ".join(output_names(options.prompts, count))
            print(f"{job.path}: {count} output(s) ({stems}), {channel_note(job.channels, options.ref_channel)} -> "
                  f"{job.output_dir} ({len(written)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

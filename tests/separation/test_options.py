"""SeparationOptions: values checked by create (no model), prompts and chunk sizes by bind; progress counts passes;
the command lines answer --help without importing torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from separation.options import SeparationError, SeparationOptions

ROOT = Path(__file__).resolve().parents[2]


class Model:
    """A stand-in with the demo model's rate and window."""

    prompt_names, sample_rate, window_samples = ("speech", "sfx", "sfxbg"), 48000, 2048

    def check_prompts(self, prompts, batch_size):
        unknown = [p for item in prompts for p in item if p not in self.prompt_names]
        if unknown:
            raise ValueError(f"unknown prompt(s) {' '.join(unknown)}")


def test_create_checks_values_without_a_model_and_bind_converts_once():
    request = SeparationOptions.create(prompts=["speech", "sfx"], css_segment_size=2, start_time=0.5)
    assert request.model_rate is None and request.css is None  # nothing model-dependent yet
    opts = request.bind(Model())
    assert opts.css == (96000, 48000) and opts.model_rate == 48000 and opts.prompts == ("speech", "sfx")
    assert opts.start_time == 0.5 and opts.subtype == "PCM_16" and opts.cut
    assert SeparationOptions.create(prompts=["speech"], css_segment_size=2, css_shift_size=0.5).bind(
        Model()).css == (96000, 24000)
    eval_opts = SeparationOptions.from_css_conf(Model(), {"segment_size": 2})  # the paper's protocol: no overlap
    assert eval_opts.css == (96000, 96000) and eval_opts.prompts is None
    with pytest.raises(AttributeError):
        opts.css = None  # frozen


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"css_segment_size": 0}, "--css_segment_size must be a finite number of seconds > 0, got 0"),
    ({"css_shift_size": 1}, "--css_shift_size 1 needs --css_segment_size"),
    ({"css_segment_size": 1, "css_shift_size": 2}, "--css_shift_size 2 must not exceed --css_segment_size 1"),
    ({"css_batch_size": 0}, "--css_batch_size must be at least 1, got 0"),
    ({"start_time": float("nan")}, "--start_time must be a finite number of seconds >= 0, got nan"),
    ({"start_time": 2, "end_time": 1}, r"--start_time \(2 s\) must be before --end_time \(1 s\)"),
    ({"ref_channel": -1}, "--ref_channel must be >= 0, got -1"),
    ({"fmt": "flac", "bit_depth": 32}, "--format flac with --bit_depth 32 is not supported"),
])
def test_create_refuses_bad_values(kwargs, message):
    with pytest.raises(SeparationError, match=message):
        SeparationOptions.create(prompts=["speech"], **kwargs)


def test_bind_refuses_what_the_model_cannot_take():
    with pytest.raises(SeparationError, match=r"--css_segment_size 0.01 s is shorter than this model's STFT window "
                                              r"\(2048 samples = 0.04267 s at 48000 Hz\)"):
        SeparationOptions.create(prompts=["speech"], css_segment_size=0.01).bind(Model())
    with pytest.raises(SeparationError, match="no prompts given; this model knows: speech, sfx, sfxbg"):
        SeparationOptions.create().bind(Model())
    with pytest.raises(ValueError, match="unknown prompt"):
        SeparationOptions.create(prompts=["piano"]).bind(Model())
    no_prompts = type("Conventional", (Model,), {"prompt_names": None})()
    assert SeparationOptions.create(prompts=["ignored"]).bind(no_prompts).prompts is None


@pytest.mark.parametrize(("css_segment_size", "num_samples", "channels", "passes"), [
    (None, 96000, 2, 1),   # no chunking: both channels in one pass, one step (the bar used to stop at 50 %)
    (4, 96000, 2, 1),      # shorter than one segment: one pass
    (1, 96000, 2, 6),      # 2 s in 1 s segments every 0.5 s: 3 segments per channel
    (1, 32000, 1, 3),      # at 16 kHz: the segments are counted at the model's rate
])
def test_num_passes_matches_what_the_pipeline_reports(css_segment_size, num_samples, channels, passes):
    import torch

    from separation.pipeline import separate_mixture

    opts = SeparationOptions.create(prompts=["speech"], css_segment_size=css_segment_size).bind(Model())
    rate = 16000 if num_samples == 32000 else 48000
    steps = []
    separate_mixture(lambda x: x[:, None], torch.randn(channels, num_samples), rate, opts, progress=steps.append)
    assert sum(steps) == opts.num_passes(num_samples, rate, channels) == passes


@pytest.mark.parametrize("script", ["separate.py", "eval.py", "train.py"])
def test_help_answers_without_importing_torch(script):
    code = ("import runpy, sys; sys.argv = [sys.argv[1], '--help']\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
            "print('heavy:', sorted(m for m in ('torch', 'lightning') if m in sys.modules), 'exit:', code)")
    proc = subprocess.run([sys.executable, "-c", code, script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "heavy: [] exit: 0"
    assert "usage: python" in proc.stdout

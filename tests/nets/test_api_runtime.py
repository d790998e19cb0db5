"""The Python API gets the command lines' fast path: nets.load_model tunes the CPU allocator, unless opted out."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODE = ("from nets import load_model\nfrom utils import runtime\n"
        "assert not runtime._configured\n"
        "load_model('pretrained_models/tuss.demo/checkpoints/model.pth')\n"
        "print('tuned' if runtime._configured else 'defaults')\n")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
@pytest.mark.parametrize(("env", "expected"), [({}, "tuned"), ({"TUSS_ALLOCATOR_TUNING": "0"}, "defaults")])
def test_load_model_tunes_the_allocator_unless_opted_out(env, expected):
    base = {k: v for k, v in os.environ.items() if k != "TUSS_ALLOCATOR_TUNING"}
    proc = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, env={**base, **env}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == expected

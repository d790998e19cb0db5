"""Shared pieces of the web page's tests: the bundled example, the command line's stems for it, free ports, a page
served by ``python app.py`` in a subprocess."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "demo_cass.wav"
#: how close a page's stem must be to the command line's: this fraction of the command line's peak
TOLERANCE = 1e-4


def free_port() -> int:
    """A TCP port nothing listens on now (bound to port 0, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read(path: str | os.PathLike) -> np.ndarray:
    """A wav file as float32 ``(samples, channels)``."""
    return sf.read(str(path), dtype="float32", always_2d=True)[0]


def assert_same_audio(page: str | os.PathLike, cli: np.ndarray, name: str = "stem") -> None:
    """The page's stem file equals the command line's stem to :data:`TOLERANCE` of its peak."""
    got = read(page)
    assert got.shape == cli.shape, f"{name}: shape {got.shape}, the command line's {cli.shape}"
    peak = float(np.abs(cli).max())
    assert peak > 0
    err = float(np.abs(got - cli).max())
    assert err <= TOLERANCE * peak, f"{name}: differs from the command line's by {err:.3g} (peak {peak:.3g})"


@pytest.fixture(scope="session")
def cli_stems(tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """The command line's stems of the bundled example: ``{task: {stem name: (samples, channels)}}``, computed on
    first use by ``separate.py --audio_path examples/demo_cass.wav --task TASK`` (its ``main``, in this process)."""
    import separate

    class Stems(dict):
        def __missing__(self, task: str) -> dict[str, np.ndarray]:
            out = tmp_path_factory.mktemp(f"cli_{task}")
            code = separate.main(["--audio_path", str(EXAMPLE), "--task", task, "--audio_output_dir", str(out),
                                  "--quiet"])
            assert code == 0
            files = [p for p in (out / "wav").glob("*.wav") if p.stem != "mix"]  # speech0, sfxbg1, ...: in order
            stems = {p.stem: read(p) for p in sorted(files, key=lambda p: int(re.search(r"\d+$", p.stem)[0]))}
            self[task] = stems
            return stems

    return Stems()


class Server:
    """``python app.py --port N`` in a subprocess, with its own Gradio cache folder and an empty working folder."""

    def __init__(self, tmp: Path, *args: str, timeout: float = 90) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.cache = tmp / "gradio"
        self.cwd = tmp / "cwd"
        self.cwd.mkdir()
        env = {**os.environ, "GRADIO_TEMP_DIR": str(self.cache), "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(self.port), *args],
                                     cwd=self.cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        for stream, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._drain, args=(stream, lines), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not any(line.startswith("TUSS web page: ") for line in self.stdout):  # printed once it serves
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"app.py did not start:\n{''.join(self.stdout)}{''.join(self.stderr)[-3000:]}")
            time.sleep(0.1)

    @staticmethod
    def _drain(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as a service manager stops it; SIGKILL if it has not ended within ``timeout`` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture(scope="module")
def app_server(tmp_path_factory) -> Iterator[Server]:
    """The page served by ``python app.py`` (the bundled models) on a free port; stopped after the module."""
    server = Server(tmp_path_factory.mktemp("app"))
    try:
        yield server
    finally:
        server.stop()

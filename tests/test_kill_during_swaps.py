"""A SIGKILL at every step of the two output swaps: ``separate.py``'s (``wav/`` and ``spectrogram/``,
:func:`separation.separator.write_outputs`) and ``eval.py``'s (``audio_outputs/`` and the result files,
:func:`training.evaluate.write_results`).

A forked child writes a new set over an old one and dies (``os._exit``: no clean-up, no ``finally``) just before
its n-th rename or removal, for every n until the write completes. After each death:

- what a user sees is the complete old set, the complete new set, or -- only while a journaled swap is half done
  -- a state that the next run completes;
- the next run (its recovery, then a write of its own) finds no more than the complete old or new set, and leaves
  no staging folder or temporary file behind.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from separation.options import SeparationOptions
from separation.separator import OUTPUT_STAGING, write_outputs
from training.evaluate import RESULT_STAGING, AudioSaver, recover_results, result_paths, write_results
from utils.atomic import JOURNAL_NAME, StagedFolder

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

#: the calls a kill may come before: every rename and every removal of the swaps and their clean-up
STEPS = ("replace", "rename", "unlink", "rmdir")


def visible(folder: Path) -> dict[str, bytes]:
    """{relative path: content} of the files a user sees under ``folder`` (nothing under a hidden name); a WAV's
    content is its samples (a float WAV's PEAK chunk holds the time it was written)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[str(rel)] = sf.read(path, dtype="float32")[0].tobytes() if path.suffix == ".wav" else path.read_bytes()
    return out


def hidden(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def journaled(folder: Path, prefix: str) -> bool:
    return any((d / JOURNAL_NAME).exists() for d in folder.glob(f"{prefix}*"))


def killed_at(n: int, write) -> bool:
    """Run ``write()`` in a forked child that dies before its ``n``-th rename or removal; ``True`` when it died
    (``False``: the write completed with fewer steps)."""
    pid = os.fork()
    if pid == 0:  # the child: no pytest clean-up may run here
        try:
            count = [0]
            for name in STEPS:
                real = getattr(os, name)

                def step(*args, _real=real, **kwargs):
                    count[0] += 1
                    if count[0] == n:
                        os._exit(9)  # as SIGKILL: nothing more runs
                    return _real(*args, **kwargs)

                setattr(os, name, step)
            write()
        except BaseException:
            os._exit(3)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 9), f"the write failed (exit {code}) instead of completing or being killed"
    return code == 9


def kill_at_every_step(tmp_path: Path, write_old, write_new, old: dict, new: dict, prefix: str,
                       recover) -> tuple[int, int]:
    """Write the old set, then the new one killed before its n-th step, for n = 1, 2, ... until it completes; after
    each kill check what is visible, run ``recover(folder)`` (what the next run does first) and the next run itself.
    Returns ``(deaths, kills in the middle of a swap)``."""
    n, deaths, in_transition = 0, 0, 0
    while True:
        n += 1
        folder = tmp_path / f"run{n}"
        folder.mkdir()
        write_old(folder)
        if not killed_at(n, lambda folder=folder: write_new(folder)):
            assert visible(folder) == new and hidden(folder) == []
            return deaths, in_transition
        deaths += 1
        if visible(folder) not in (old, new):
            assert journaled(folder, prefix), f"kill before step {n}: a half swap without a journal"
            in_transition += 1
        recover(folder)
        assert visible(folder) in (old, new), f"kill before step {n}: not a complete set after recovery"
        write_new(folder)  # the next run itself
        assert visible(folder) == new and hidden(folder) == [], f"kill before step {n}: {hidden(folder)} left"
        shutil.rmtree(folder)


def signals(seed: int, names: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((1, 4000)).astype(np.float32) * 0.1
    return mix, [mix * (0.3 + 0.1 * i) for i in range(len(names))]


def test_separate_swap_killed_at_every_step_shows_only_complete_sets(tmp_path):
    old_opts = SeparationOptions(residual=True)
    new_opts = SeparationOptions(spectrograms=False)  # the old spectrogram/ must go with the rest of the old set
    old_mix, old_stems = signals(0, ["speech", "sfx"])
    new_mix, new_stems = signals(1, ["speech", "sfx"])

    def write_old(out):
        write_outputs(out, old_mix, old_stems, ["speech0", "sfx1"], 16000, old_opts)
        (out / "notes.txt").write_text("the user's")

    def write_new(out):
        return write_outputs(out, new_mix, new_stems, ["speech0", "sfx1"], 16000, new_opts)

    ref_old, ref_new = tmp_path / "ref_old", tmp_path / "ref_new"
    write_old(ref_old)
    write_old(ref_new)
    write_new(ref_new)
    old, new = visible(ref_old), visible(ref_new)
    assert old != new and "spectrogram/mix.png" in old and not any(k.startswith("spectrogram") for k in new)

    deaths, in_transition = kill_at_every_step(tmp_path, write_old, write_new, old, new, OUTPUT_STAGING,
                                               lambda out: StagedFolder.recover(out, OUTPUT_STAGING))
    assert deaths >= 8 and in_transition >= 2  # the journal, 4 renames, its removal, the clean-up were all hit


def test_eval_swap_killed_at_every_step_shows_only_complete_sets(tmp_path):
    names = ("result.json", "result.txt", "result.md", "results_items.csv")

    def write(exp, seed):
        txt, js, audio_dir = result_paths(exp)
        staged = StagedFolder(exp, RESULT_STAGING)
        saver = AudioSaver(audio_dir, staged.path / audio_dir.name)
        mix, stems = signals(seed, ["speech"])
        saver({"dataset": "demo", "prompts": ["speech"], "sisnr": [float(seed)], "id": "a", "manifest": "m.json",
               "channel": 0}, stems[0][None], 16000)
        files = {exp / "results_items.csv": lambda tmp: tmp.write_text(f"items {seed}\n"),
                 exp / "result.md": lambda tmp: tmp.write_text(f"table {seed}\n")}
        try:
            write_results({"test/sisnr": float(seed)}, txt, js, extra_files=files, staged=staged,
                          also=[saver.finish()])
        except BaseException:
            staged.discard()
            raise
        staged.close()

    ref_old, ref_new = tmp_path / "ref_old", tmp_path / "ref_new"
    for ref in (ref_old, ref_new):
        ref.mkdir()
        write(ref, 1)
    write(ref_new, 2)
    old, new = visible(ref_old), visible(ref_new)
    assert old != new and all(name in new for name in names)
    assert sorted(k for k in new if k.startswith("audio_outputs")) == ["audio_outputs/demo/0000_speech0_sisnr2.00.wav",
                                                                         "audio_outputs/demo/items.tsv"]

    deaths, in_transition = kill_at_every_step(  # recover: what the next eval.py does first
        tmp_path, lambda exp: write(exp, 1), lambda exp: write(exp, 2), old, new, RESULT_STAGING,
        lambda exp: recover_results(exp, exp / "audio_outputs"))
    assert deaths >= 14 and in_transition >= 8  # five files and a folder, each renamed aside and in

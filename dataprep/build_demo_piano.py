"""A folder corpus for teaching the demo model a new prompt, ``piano`` (docs/finetuning.md).

    python -m dataprep.build_demo_piano --demo demo --out demo_piano [--seed 0] [--jobs 2]

Needs the demo corpus (``bash dataprep/prepare_demo.sh``) and FluidSynth with a General MIDI soundfont, as the demo's
music does. Songs are composed with five stems (:func:`dataprep.demo_music.compose_piano_song`: ``piano`` and
``drums``, ``bass``, ``vocals``, ``other`` without any piano) and each stem is rendered alone, the way the demo
corpus renders its music. The songs are split into train, valid and test songs (disjoint). Written under ``--out``,
in the layout of ``python -m dataprep.build_folders`` (docs/data.md):

- ``<prompt>/``: the train songs' stems (``piano/``, ``drums/``, ``bass/``, ``vocals/``, ``other/``), plus links to
  the demo corpus's train recordings: ``speech/``, ``sfx/``, ``sfxbg/``, the demo songs' ``musicbg``, ``drums``,
  ``bass`` and ``vocals`` stems, and those of their ``other`` stems that hold no piano (GM programs 0-7);
- ``_mixtures/{valid,test}/<id>/``: one fixed 4 s mixture per valid/test song (``mix.wav`` = the sample-exact sum of
  ``drums.wav``, ``bass.wav``, ``vocals.wav``, ``other.wav`` and ``piano.wav``; gains within ±2.5 dB, as the
  demo's test mixtures).

Then the manifests are built by ``dataprep.build_folders`` (``<json-dir>/demo_piano_pools.json``,
``demo_piano.json``). A model without a ``piano`` prompt is scored on the test mixtures by its ``other`` output with
``tools/score_output.py``. Every file depends on ``--seed`` alone (and the package versions).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from dataprep.build_demo import RATE, _sum_pcm16, active_rms, normalize, read_mono, to_pcm16, write_pcm16
from dataprep.demo_music import PIANO_STEMS, PPQ, compose_piano_song, midi_bytes, render_midi
from datasets.manifest import ManifestError

__all__ = ["SONGS", "build", "main"]

#: songs per split (train songs give the pools; each valid/test song gives one fixed mixture)
SONGS = {"train": 48, "valid": 6, "test": 40}
MIXTURE_SECONDS = 4.0
DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
_PIANOS = set(range(8))  # GM programs 0-7: the pianos, e-pianos, harpsichord and clavinet


class PianoCorpusError(RuntimeError):
    """A piano corpus that cannot be built (no demo corpus, no FluidSynth); the message says what to do."""


def _link(target: Path, link: Path) -> None:
    """A relative symbolic link ``link -> target`` (kept when it already points there)."""
    rel = os.path.relpath(target, link.parent)
    if link.is_symlink() and os.readlink(link) == rel:
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(rel, link)


def _render_song(job: tuple) -> dict[str, np.ndarray]:
    """The five stems of one song as float signals at :data:`RATE`, balanced as the demo's songs are."""
    song, rng, tmp, soundfont = job
    length = round((song.seconds + 1.5) * RATE)
    fade = np.ones(length)
    fade[-round(0.3 * RATE):] = np.linspace(1.0, 0.0, round(0.3 * RATE))
    stems = {}
    for stem in PIANO_STEMS:
        mid, wav = tmp.with_name(f"{tmp.name}-{stem}.mid"), tmp.with_name(f"{tmp.name}-{stem}.wav")
        mid.write_bytes(midi_bytes(song.stem_parts(stem), song.tempo, song.bars * 4 * PPQ))
        x = read_mono(render_midi(mid, wav, soundfont, RATE))[0][:length]
        mid.unlink()
        wav.unlink()
        stems[stem] = normalize(np.pad(x, (0, length - len(x))) * fade, RATE, -24.0 + rng.uniform(-3, 3), peak=1.0)
    total = sum(stems.values())
    scale = min(10 ** (-18 / 20) / max(active_rms(total, RATE), 1e-9), 0.89 / np.max(np.abs(total)))
    return {stem: x * scale for stem, x in stems.items()}


def _mixture(stems: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A 4 s window of a song (the same for every stem, none silent), gains within ±2.5 dB, at -20 dBFS, as int16
    files whose ``mix`` is their sample-exact sum."""
    n = round(MIXTURE_SECONDS * RATE)
    total = len(next(iter(stems.values())))
    for _ in range(20):
        start = int(rng.integers(0, max(1, total - n + 1)))
        crops = {k: x[start:start + n] for k, x in stems.items()}
        if all(active_rms(x, RATE) > 10 ** (-50 / 20) for x in crops.values()):
            break
    gains = {k: float(rng.uniform(-2.5, 2.5)) for k in crops}
    scaled = {k: x * 10 ** (gains[k] / 20) / max(active_rms(x, RATE), 1e-9) for k, x in crops.items()}
    mix = sum(scaled.values())
    scale = min(10 ** (-20 / 20) / active_rms(mix, RATE), 0.89 / np.max(np.abs(mix)))
    ints = {k: to_pcm16(x * scale) for k, x in scaled.items()}
    ints["mix"] = _sum_pcm16(ints[k] for k in PIANO_STEMS)
    return ints


def _link_demo(demo: Path, out: Path) -> dict[str, int]:
    """Links to the demo corpus's train recordings: speech, sfx, sfxbg, musicbg and the piano-free stems."""
    counts = dict.fromkeys(("speech", "sfx", "sfxbg", "musicbg", "drums", "bass", "vocals", "other"), 0)
    for u in json.loads((demo / "speech" / "index.json").read_text())["utterances"]:
        if u["split"] == "train":
            _link(demo / u["path"], out / "speech" / Path(u["path"]).relative_to("speech/train"))
            counts["speech"] += 1
    for c in json.loads((demo / "sfx" / "index.json").read_text())["clips"]:
        if c["split"] == "train":
            _link(demo / c["path"], out / "sfx" / Path(c["path"]).name)
            counts["sfx"] += 1
    for b in json.loads((demo / "sfxbg" / "index.json").read_text())["beds"]:
        if b["split"] == "train":
            _link(demo / b["path"], out / "sfxbg" / f"demo-{Path(b['path']).name}")
            counts["sfxbg"] += 1
    for song in json.loads((demo / "music" / "index.json").read_text())["songs"]:
        if song["split"] != "train":
            continue
        for stem in ("drums", "bass", "vocals", "other", "musicbg"):
            if stem == "other" and _PIANOS & set(song["programs"]["other"]):
                continue
            _link(demo / song["files"][stem], out / stem / f"demo-{song['id']}.wav")
            counts[stem] += 1
    return counts


def build(demo: Path, out: Path, json_dir: Path, seed: int = 0, jobs: int = 2, songs: dict[str, int] | None = None,
          soundfont: Path = DEFAULT_SOUNDFONT, log=print) -> dict[str, Path]:
    """Build the corpus folder and its manifests; returns ``{manifest name: path}``.

    Raises:
        PianoCorpusError: no demo corpus, no FluidSynth or soundfont.
        ManifestError: the manifests could not be built.
    """
    from concurrent.futures import ThreadPoolExecutor

    songs = dict(SONGS if songs is None else songs)
    for step in ("speech", "sfx", "sfxbg", "music"):
        if not (demo / step / "index.json").is_file():
            raise PianoCorpusError(f"{demo / step / 'index.json'} not found: build the demo corpus first "
                                   "(bash dataprep/prepare_demo.sh)")
    if shutil.which("fluidsynth") is None:
        raise PianoCorpusError("fluidsynth not found (apt-get install fluidsynth)")
    if not soundfont.is_file():
        raise PianoCorpusError(f"soundfont {soundfont} not found (apt-get install timgm6mb-soundfont)")
    out.mkdir(parents=True, exist_ok=True)
    ignore = out / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# generated by dataprep/build_demo_piano.py\n*\n", encoding="utf-8")
    log(f"[demo_piano] linked from {demo}: " + ", ".join(f"{k} {v}" for k, v in _link_demo(demo, out).items()))
    tmp = out / ".render"
    tmp.mkdir(exist_ok=True)
    plan = []
    for s_index, split in enumerate(("train", "valid", "test")):
        for i in range(songs[split]):
            rng = np.random.default_rng([seed, 7, s_index, i])
            plan.append((split, i, compose_piano_song(rng, 8), rng))

    def files(split: str, i: int) -> dict[str, Path]:
        if split == "train":
            return {stem: out / stem / f"piano-song{i:03d}.wav" for stem in PIANO_STEMS}
        folder = out / "_mixtures" / split / f"piano-{split}-{i:03d}"
        return {key: folder / f"{key}.wav" for key in ("mix", *PIANO_STEMS)}

    def one(item: tuple) -> None:
        split, i, song, rng = item
        targets = files(split, i)
        if all(p.is_file() for p in targets.values()):  # written atomically: complete (a rerun renders the rest)
            return
        stems = _render_song((song, rng, tmp / f"{split}-{i:03d}", soundfont))
        for key, data in (stems if split == "train" else _mixture(stems, rng)).items():
            write_pcm16(targets[key], data, RATE)

    log(f"[demo_piano] rendering {len(plan)} songs x {len(PIANO_STEMS)} stems with FluidSynth")
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(one, plan))
    shutil.rmtree(tmp, ignore_errors=True)
    from dataprep import build_folders

    status = build_folders.main(["--root", str(out), "--name", "demo_piano", "--json-dir", str(json_dir),
                                 "--valid-fraction", "0", "--test-fraction", "0", "--min-seconds", "0.05",
                                 "--seed", str(seed)])
    if status != 0:
        raise ManifestError(f"python -m dataprep.build_folders --root {out} failed (exit status {status})")
    written = {name: json_dir / name for name in ("demo_piano_pools.json", "demo_piano.json")}
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring); errors print one line and return 1."""
    parser = argparse.ArgumentParser(prog="python -m dataprep.build_demo_piano", description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, default=Path("demo"), help="the demo corpus folder (default: demo)")
    parser.add_argument("--out", type=Path, default=Path("demo_piano"), help="corpus folder (default: demo_piano)")
    parser.add_argument("--json-dir", type=Path, default=Path("datasets/json_files"),
                        help="where the manifests go (default: datasets/json_files)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--jobs", type=int, default=2, help="songs rendered in parallel (default 2)")
    parser.add_argument("--soundfont", type=Path, default=DEFAULT_SOUNDFONT,
                        help=f"General MIDI soundfont (default: {DEFAULT_SOUNDFONT})")
    args = parser.parse_args(argv)
    try:
        build(args.demo, args.out, args.json_dir, args.seed, args.jobs, soundfont=args.soundfont)
    except (PianoCorpusError, ManifestError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

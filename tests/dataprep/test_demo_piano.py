"""The piano fine-tuning corpus (dataprep/build_demo_piano.py, docs/finetuning.md): songs whose piano is a stem of
its own, a folder corpus with links to the demo corpus, fixed mixtures that are the exact sum of their stems, and
manifests that pass the checker; and tools/score_output.py, which scores one output on them."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dataprep.build_demo import DEFAULT_SOUNDFONT
from dataprep.build_demo_piano import build
from dataprep.demo_music import PIANO_PROGRAMS, PIANO_STEMS, compose_piano_song, compose_song
from datasets.manifest import known_prompts, validate_manifest

ROOT = Path(__file__).resolve().parents[2]


def test_a_piano_song_has_the_piano_apart_and_no_piano_in_other():
    for seed in range(40):
        song = compose_piano_song(np.random.default_rng(seed))
        programs = song.describe()["programs"]
        assert song.stems == PIANO_STEMS and set(programs["piano"]) <= set(PIANO_PROGRAMS)
        assert not set(programs["other"]) & set(range(8))  # GM 0-7: pianos, e-pianos, harpsichord, clavinet
        assert all(song.stem_parts(stem) and all(p.notes for p in song.stem_parts(stem)) for stem in PIANO_STEMS)
    assert compose_song(np.random.default_rng(0)).stems == ("drums", "bass", "vocals", "other")


def _fake_demo(root: Path) -> None:
    """The index files and a few recordings of a demo corpus (what the piano corpus links to)."""
    rng = np.random.default_rng(0)

    def wav(rel: str, rate: int = 48000, seconds: float = 2.0) -> dict:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, rng.standard_normal(int(rate * seconds)) * 0.05, rate, subtype="PCM_16")
        return {"path": rel, "sample_rate": rate, "num_samples": int(rate * seconds)}

    utterances = [{**wav(f"speech/{s}/spk/u{i}.wav", 16000), "split": s} for s in ("train", "test") for i in range(2)]
    clips = [{**wav(f"sfx/{s}/c{i}.wav"), "split": s} for s in ("train", "test") for i in range(2)]
    beds = [{**wav(f"sfxbg/{s}/bg{i}.wav"), "split": s} for s in ("train", "test") for i in range(1)]
    songs = []
    for i, other in enumerate(([48], [0, 24])):  # the second song's other holds a piano: not linked
        files = {stem: wav(f"music/train/song{i:03d}/{stem}.wav")["path"]
                 for stem in ("drums", "bass", "vocals", "other", "musicbg")}
        songs.append({"id": f"song{i:03d}", "split": "train", "files": files, "programs": {"other": other}})
    for step, data in (("speech", {"utterances": utterances}), ("sfx", {"clips": clips}), ("sfxbg", {"beds": beds}),
                       ("music", {"songs": songs})):
        (root / step / "index.json").write_text(json.dumps(data))


@pytest.mark.skipif(shutil.which("fluidsynth") is None or not DEFAULT_SOUNDFONT.is_file(),
                    reason="needs fluidsynth and timgm6mb-soundfont (apt-get install fluidsynth timgm6mb-soundfont)")
def test_the_corpus_is_a_folder_corpus_with_exact_mixtures_and_valid_manifests(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as from the repository root
    _fake_demo(Path("demo"))
    json_dir = Path("json")
    written = build(Path("demo"), Path("piano"), json_dir, seed=0, jobs=2, songs={"train": 1, "valid": 1, "test": 2})
    assert sorted(written) == ["demo_piano.json", "demo_piano_pools.json"]
    folders = sorted(p.name for p in Path("piano").iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    assert folders == sorted(["speech", "sfx", "sfxbg", "musicbg", *PIANO_STEMS])
    assert sorted(p.name for p in Path("piano/other").iterdir()) == ["demo-song000.wav", "piano-song000.wav"]
    links = sorted(Path("piano/speech").rglob("*.wav"))
    assert [p.name for p in links] == ["u0.wav", "u1.wav"] and all(p.is_symlink() for p in links)  # train only
    for name in written:
        report = validate_manifest(json_dir / name, prompts=known_prompts(["piano"]))
        assert report.ok, report.format()
    pools = json.loads((json_dir / "demo_piano_pools.json").read_text())["train"]
    assert len(pools["piano"]) == 1 and len(pools["speech"]) == 2  # the demo's train recordings only
    fixed = json.loads((json_dir / "demo_piano.json").read_text())
    assert (len(fixed["valid"]), len(fixed["test"])) == (1, 2)
    for item in fixed["test"].values():
        assert sorted(item["ref"]) == sorted(f"{s}_1" for s in PIANO_STEMS) and item["num_samples"] == 4 * 48000
        refs = [sf.read(p, dtype="int16")[0].astype(np.int32) for p in item["ref"].values()]
        assert np.array_equal(sum(refs), sf.read(item["mix"], dtype="int16")[0])  # the sample-exact sum
        assert all(np.abs(r).max() > 100 for r in refs)  # no silent stem
    before = (json_dir / "demo_piano.json").read_bytes()
    build(Path("demo"), Path("piano"), json_dir, seed=0, jobs=2, songs={"train": 1, "valid": 1, "test": 2})
    assert (json_dir / "demo_piano.json").read_bytes() == before  # a rerun: the same manifests

    # tools/score_output.py: the demo model's "other" output against the piano, on the mixtures as given
    import subprocess
    import sys

    import torch

    from nets import load_model
    from training.metrics import score

    tool = [sys.executable, str(ROOT / "tools/score_output.py"), "tuss.demo", str(json_dir / "demo_piano.json"),
            "--prompts", "drums", "bass", "vocals", "other", "--reference", "piano_1"]
    result = subprocess.run([*tool, "--output", "other"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    model, expected = load_model("tuss.demo"), []
    for item in fixed["test"].values():
        mix = torch.from_numpy(sf.read(item["mix"], dtype="float32")[0])
        with torch.inference_mode():
            est = model(mix[None], [["drums", "bass", "vocals", "other"]])[0, 3:4]
        piano = torch.from_numpy(sf.read(item["ref"]["piano_1"], dtype="float32")[0])[None]
        expected.append(float(score(est, piano, mix)["sisnri"][0]))
    assert f"2 mixtures of {json_dir / 'demo_piano.json'}: sisnri {np.mean(expected):.2f} dB" in result.stdout
    bad = subprocess.run([*tool, "--output", "piano"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --output piano is not one of --prompts")


def test_the_piano_configs_train_on_the_corpus_and_draw_piano():
    from datasets.sampler import PromptSampler
    from training.settings import check_training_config
    from utils.config import load_config

    for name in ("tuss.demo.piano.yaml", "tuss.demo.piano.prompt.yaml", "tuss.demo.piano.songs.yaml"):
        cfg = load_config(ROOT / "configs/demo" / name)
        check_training_config(cfg)
        assert cfg.dataset_conf.train.json_paths == ["datasets/json_files/demo_piano_pools.json"]
        assert cfg.model_conf.prompts[-1] == "piano" and "piano" in PromptSampler(cfg.prompts).reachable()
    frozen = load_config(ROOT / "configs/demo/tuss.demo.piano.prompt.yaml").freeze
    assert "prompts.piano" not in frozen and len(frozen) == 4 + 8


def test_the_whole_network_recipe_draws_the_five_stems_and_pairs_piano_with_other():
    """configs/demo/tuss.demo.piano.yaml (row (c) of docs/finetuning.md): every five-source mixture is the five music
    stems, and piano is drawn beside `other` (what it must be told apart from) more often than beside another stem."""
    from datasets.sampler import PromptSampler
    from utils.config import load_config

    cfg = load_config(ROOT / "configs/demo/tuss.demo.piano.yaml")
    assert cfg.pretrained_model_path == "pretrained_models/tuss.demo" and cfg.init_new_prompts == {"piano": "other"}
    assert cfg.freeze == [] and cfg.num_srcs_and_weights[5] >= 0.3
    sampler, rng = PromptSampler(cfg.prompts), np.random.default_rng(0)
    assert all(sorted(sampler.sample(5, rng)) == ["bass", "drums", "other", "piano", "vocals"] for _ in range(300))
    pairs = [set(sampler.sample(2, rng)) for _ in range(4000)]
    with_piano = [c for c in pairs if "piano" in c]
    assert 0.4 < len(with_piano) / len(pairs) < 0.6
    beside = {stem: sum(stem in c for c in with_piano) / len(with_piano)
              for stem in ("other", "drums", "bass", "vocals")}
    assert beside["other"] > 0.35 and all(beside["other"] > 1.5 * beside[s] for s in ("drums", "bass", "vocals"))


def test_the_second_stage_differs_from_the_first_only_by_its_start_rate_and_song_mixtures():
    """configs/demo/tuss.demo.piano.songs.yaml (row (c), second stage): the first stage's bundle fine-tuned again with
    half the mixtures made of one song's stems; every other setting is the first stage's."""
    import yaml

    first = yaml.safe_load((ROOT / "configs/demo/tuss.demo.piano.yaml").read_text())
    second = yaml.safe_load((ROOT / "configs/demo/tuss.demo.piano.songs.yaml").read_text())
    assert second["pretrained_model_path"] == "exp/piano/whole" and second["init_new_prompts"] == {}
    assert second["dataset_conf"]["train"].pop("same_song_prob") == 0.5
    assert second["optimizer_conf"].pop("lr") < first["optimizer_conf"].pop("lr")
    for key in ("pretrained_model_path", "init_new_prompts", "keep_lr_epochs"):
        first.pop(key), second.pop(key)
    assert second == first

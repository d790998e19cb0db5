"""End to end on the offline demo corpus: a ``--small`` build, a few training steps of ``configs/demo/tuss.demo.yaml``
through the real ``train.py`` command line, the checkpoint loaded with ``nets.load_model``, then ``eval.py`` and
``separate.py`` on it; plus the improvement arithmetic of ``benchmarks/eval_demo.py`` and the demo configs' prompt
tables (which must draw exactly the five demo tasks)."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dataprep.build_demo import DEFAULT_SOUNDFONT, SFX_SOURCES
from datasets.sampler import PromptSampler
from nets import build_model, load_model
from training.module import check_training_config
from utils.config import load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from eval_demo import task_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL_PACKAGES = "espeak-ng fluidsynth timgm6mb-soundfont sound-theme-freedesktop"
TASKS = ("cass", "mss", "ss", "uss", "se")
CONFIGS = ("configs/demo/tuss.demo.yaml", "configs/demo/tuss.demo.stage1.yaml", "configs/demo/conventional.demo.yaml")


def _small_build_possible() -> bool:
    return (shutil.which("espeak-ng") is not None and shutil.which("fluidsynth") is not None
            and DEFAULT_SOUNDFONT.is_file() and SFX_SOURCES[0].root.is_dir())


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, **env}
    result = subprocess.run(args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _yaml_list(items) -> str:
    return json.dumps(items)  # JSON is YAML: the train.py override parser reads it


@pytest.mark.parametrize("name", CONFIGS)
def test_demo_config_draws_exactly_the_five_demo_tasks(name):
    cfg = load_config(ROOT / name)
    check_training_config(cfg)
    assert cfg.trainer_conf.precision == 32 and cfg.trainer_conf.strategy == "auto" and cfg.css_datasets == []
    assert [Path(p).name for p in cfg.dataset_conf.train.json_paths] == ["demo_pools.json"]
    assert [Path(p).stem for p, *_ in cfg.dataset_conf.test.json_path_and_num_data] == [f"demo_{t}" for t in TASKS]
    sampler = PromptSampler(cfg.prompts)
    rng = np.random.default_rng(0)
    seen = set()
    for n in (2, 3, 4):
        for _ in range(300):
            chain = sampler.sample(n, rng)
            kinds = set(chain)
            if kinds <= {"speech", "sfxbg", "musicbg"}:  # SS, SE, CASS (and their mixed forms)
                assert chain.count("sfxbg") <= 1 and chain.count("musicbg") <= 1 and chain.count("speech") <= 2
                seen.add("ss" if chain == ["speech", "speech"] else "cass" if kinds == {"speech", "sfxbg", "musicbg"}
                         and n == 3 else "se" if sorted(chain) == ["sfxbg", "speech"] else "other")
            elif kinds == {"sfx"}:
                seen.add("uss")
            else:
                assert kinds <= {"drums", "bass", "vocals", "other"} and len(kinds) == n, chain
                seen.add("mss" if n == 4 else "stems")
    assert {"ss", "se", "cass", "uss", "mss"} <= seen
    model = build_model(cfg)
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 3e6
    if cfg.model_name == "bslocoformer_stack":
        assert model.num_outputs == 4
    else:
        assert set(model.prompt_names) == {"speech", "sfx", "sfxbg", "drums", "bass", "vocals", "other", "musicbg"}


def test_task_metrics_reads_the_improvements_of_eval_results():
    results = {"test/sisnri": 1.0, "demo_cass_test/sisnri": 2.0, "demo_cass_test/speech/snri": 3.0,
               "demo_cass_test/speech/sisnr": 4.0, "demo_uss_test/sfx/sisnri": 5.0, "other_test/sisnri": 6.0}
    assert task_metrics(results) == {"cass/sisnri": 2.0, "cass/speech/snri": 3.0, "uss/sfx/sisnri": 5.0}


@pytest.mark.skipif(not _small_build_possible(),
                    reason=f"the demo corpus needs the Debian packages {SMALL_PACKAGES} "
                           "(bash dataprep/prepare_demo.sh --small --install)")
def test_small_corpus_train_eval_separate(tmp_path):
    corpus, json_dir, exp = tmp_path / "demo", tmp_path / "json", tmp_path / "exp"
    _run(["bash", "dataprep/prepare_demo.sh", "--small", "--out", str(corpus), "--jobs", "2"], JSON_DIR=str(json_dir))
    manifests = {t: str(json_dir / f"demo_{t}.json") for t in TASKS}
    assert all(Path(p).is_file() for p in manifests.values())
    _run([sys.executable, "train.py", "--config", "configs/demo/tuss.demo.yaml", "--exp_dir", str(exp),
          "--num_workers", "0", "--batch_size", "1", "--dataset_conf.train.chunk_size", "1",
          "--trainer_conf.max_epochs", "1", "--trainer_conf.limit_train_batches", "2",
          "--trainer_conf.num_sanity_val_steps", "0", "--warmup_steps", "0",
          "--dataset_conf.train.json_paths", _yaml_list([str(json_dir / "demo_pools.json")]),
          "--dataset_conf.valid.json_path_and_num_data", _yaml_list([[manifests["cass"], 1], [manifests["ss"], 1]]),
          "--dataset_conf.test.json_path_and_num_data", _yaml_list([[manifests["cass"], 1], [manifests["mss"], 1]])])
    ckpts = sorted(p.name for p in (exp / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and len(ckpts) >= 2, ckpts
    saved = load_config(exp / "hparams.yaml")
    assert saved.dataset_conf.train.json_paths == [str(json_dir / "demo_pools.json")]
    model = load_model(exp)  # averages the checkpoints except last.ckpt
    assert model.prompt_names is not None and "musicbg" in model.prompt_names
    mix, sr = sf.read(next(iter(json.loads(Path(manifests["cass"]).read_text())["test"].values()))["mix"],
                      dtype="float32")
    with torch.inference_mode():
        est = model(torch.from_numpy(mix)[None], [["speech", "sfxbg", "musicbg"]])
    assert sr == 48000 and est.shape == (1, 3, mix.shape[0]) and torch.isfinite(est).all()

    if (ROOT / "eval.py").is_file():
        _run([sys.executable, "eval.py", "--ckpt_path", str(exp), "--no_audio", "--quiet", "--device", "cpu"])
        result = json.loads((exp / "result.json").read_text())
        for key in ("test/sisnr", "demo_cass_test/sisnr", "demo_mss_test/sisnr", "demo_cass_test/speech/sisnr",
                    "test/sisnri", "demo_cass_test/snri", "demo_mss_test/bass/sisnri"):
            assert math.isfinite(result[key]), key
        assert (exp / "result.txt").is_file()
    if (ROOT / "separate.py").is_file():
        out = tmp_path / "sep"
        mix_path = next(iter(json.loads(Path(manifests["mss"]).read_text())["test"].values()))["mix"]
        _run([sys.executable, "separate.py", "--ckpt_path", str(exp / "checkpoints" / "last.ckpt"), "--audio_path",
              mix_path, "--task", "mss", "--audio_output_dir", str(out), "--no_spectrograms", "--quiet",
              "--device", "cpu"])
        wavs = sorted(p.name for p in (out / "wav").glob("*.wav"))
        assert len(wavs) == 5 and "mix.wav" in wavs, wavs  # the mixture and drums/bass/vocals/other
        info = sf.info(str(out / "wav" / next(w for w in wavs if w.startswith("drums"))))
        assert info.samplerate == 48000 and info.frames == sf.info(mix_path).frames

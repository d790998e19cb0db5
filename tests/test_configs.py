"""The release configs: names, hyper-parameters, data, and that every one builds and passes the training checks."""

from pathlib import Path

import numpy as np
import pytest

from datasets.dynamic_mixing import BG_COMPONENTS
from datasets.sampler import PromptSampler, parse_weights
from nets import build_model
from tests.helpers import load_fixture
from utils.config import load_config
from utils.lightning_module import SeparationModule, check_training_config

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("dnr", "musdb", "vctk-demand", "wham")
UNIFIED = ["conventional.large.2-4src", "conventional.medium.2-4src", "tuss.large.2-4src",
           "tuss.large.2-4src.promptdropout", "tuss.medium.2-4src"]
EXPECTED = ({f"unified/{n}.yaml" for n in UNIFIED}
            | {f"{d}/{d}.{spec}.{kind}.medium.yaml" for d in TASKS for spec in ("data-specialist", "task-specialist")
               for kind in ("tuss", "conventional")}
            | {f"fuss/fuss.data-specialist.{kind}.medium.yaml" for kind in ("tuss", "conventional")})
# prompts of the training pools (corpora.md §15)
POOL_PROMPTS = {"vctk_48k": {"speech"}, "wsj0_speech_16k": {"speech"}, "librivox_urgent2024": {"speech"},
                "fsd50k_44.1k": {"sfx", "sfxbg"}, "wham_noise_48k": {"sfxbg"}, "demand_48k": {"sfxbg"},
                "moisesdb_44.1k_sad": {"drums", "bass", "vocals", "other"},
                "musdb18hq_44.1k_sad": {"drums", "bass", "vocals", "other"}, "fma_44.1k": {"musicbg"}}
VALID_N = {"vctk_demand_48k": 500, "musdb18hq_44.1k_sad": 12, "dnr_44.1k": 100, "wham_max_16k": 500,
           "fuss_2src_16k": 200, "fuss_3src_16k": 200, "fuss_4src_16k": 200}
RELEASE = sorted(str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").glob("*/*.yaml")
                 if p.parent.name not in ("tests", "demo"))  # the release's 23; demo configs are tested elsewhere


def test_the_23_release_configs_exist():
    assert len(RELEASE) == 23 and set(RELEASE) == EXPECTED


@pytest.mark.parametrize("name", RELEASE)
def test_config_builds_and_passes_training_checks(name):
    cfg = load_config(ROOT / "configs" / name)
    check_training_config(cfg)
    model = build_model(cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{name}: {trainable / 1e6:.2f} M trainable parameters")
    size = "large" if ".large." in name else "medium"
    expected = {("tuss", "medium"): 11.13, ("tuss", "large"): 38.21}.get((cfg.model_name, size))
    if expected:
        assert round(trainable / 1e6, 2) == expected
    assert cfg.trainer_conf.strategy == "auto" and cfg.trainer_conf.limit_train_batches == 2500
    assert cfg.batch_size == (2 if size == "large" else 4) and cfg.dataset_conf.train.chunk_size == 6
    assert cfg.optimizer_conf.eps == (1e-4 if size == "large" else 1e-8)
    assert cfg.pit_loss == (cfg.model_name == "bslocoformer_stack")
    assert cfg.loss_func_name == "snr_with_zero_refs" and cfg.warmup_steps == 10000 and cfg.keep_lr_epochs == 75
    assert "prompt_dropout" not in cfg and 0 <= cfg.p_prompt_dropout < 1


@pytest.mark.parametrize("name", RELEASE)
def test_config_data_can_produce_every_prompt_it_draws(name):
    cfg = load_config(ROOT / "configs" / name)
    pools = [Path(p).stem for p in cfg.dataset_conf.train.json_paths]
    provided = set().union(*(POOL_PROMPTS[p] for p in pools))
    for bg, (parts, _) in BG_COMPONENTS.items():
        if cfg.prompts.get(bg, {}).get("dynamic_mixing_prob", 0) > 0:
            assert provided & set(parts), f"{bg} is summed from {parts}, none of which {pools} provides"
            provided.add(bg)
    sampler = PromptSampler(cfg.prompts, available=provided)
    assert sampler.reachable() <= provided
    rng = np.random.default_rng(0)
    counts, _ = parse_weights(cfg.num_srcs_and_weights)
    for n in counts:
        for _ in range(20):
            assert len(sampler.sample(int(n), rng)) == n
    if cfg.model_name == "bslocoformer_stack":
        assert cfg.model_conf.num_spk >= counts.max()
    for path, n, *_ in cfg.dataset_conf.valid.json_path_and_num_data:
        assert VALID_N[Path(path).stem] == n
    assert all(n is None for _, n, *_ in cfg.dataset_conf.test.json_path_and_num_data)
    if name.startswith("unified/"):
        assert pools == list(POOL_PROMPTS)  # all nine training manifests
        assert len(cfg.dataset_conf.test.json_path_and_num_data) == 8


def test_prompt_dropout_config_uses_the_read_key():
    cfg = load_config(ROOT / "configs/unified/tuss.large.2-4src.promptdropout.yaml")
    assert cfg.p_prompt_dropout > 0 and cfg.pretrained_model_path == "exp/oss/tuss.large.2-4src"


def test_published_hparams_load_unchanged():
    for kind in ("tuss", "conventional"):
        hparams = load_fixture(kind)["hparams"]
        check_training_config(hparams)
        module = SeparationModule(hparams)
        assert module.config.to_dict() == hparams
        assert module.pit_loss == (kind == "conventional") and module.p_prompt_dropout == 0.0

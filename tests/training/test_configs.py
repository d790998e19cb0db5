"""The release configs: equal to the authors' release (allowed deviations only), build, pass the training checks,
and can draw every prompt they ask for."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from datasets.dynamic_mixing import BG_COMPONENTS, DynamicMixingDataset, SourcePool
from datasets.sampler import PromptSampler, parse_weights
from nets import build_model
from tests.helpers import load_fixture
from training.module import SeparationModule, check_training_config
from utils.config import load_config

ROOT = Path(__file__).resolve().parents[2]
#: the release's 23 configs as data ({path relative to configs/: content}), copied from the authors' release
RELEASE_DATA = json.loads((ROOT / "tests" / "fixtures" / "release_configs.json").read_text())
TASKS = ("dnr", "musdb", "vctk-demand", "wham")
UNIFIED = ["conventional.large.2-4src", "conventional.medium.2-4src", "tuss.large.2-4src",
           "tuss.large.2-4src.promptdropout", "tuss.medium.2-4src"]
EXPECTED = ({f"unified/{n}.yaml" for n in UNIFIED}
            | {f"{d}/{d}.{spec}.{kind}.medium.yaml" for d in TASKS for spec in ("data-specialist", "task-specialist")
               for kind in ("tuss", "conventional")}
            | {f"fuss/fuss.data-specialist.{kind}.medium.yaml" for kind in ("tuss", "conventional")})
# prompts of the training pools (docs/corpora.md §15)
POOL_PROMPTS = {"vctk_48k": {"speech"}, "wsj0_speech_16k": {"speech"}, "librivox_urgent2024": {"speech"},
                "fsd50k_44.1k": {"sfx", "sfxbg"}, "wham_noise_48k": {"sfxbg"}, "demand_48k": {"sfxbg"},
                "moisesdb_44.1k_sad": {"drums", "bass", "vocals", "other"},
                "musdb18hq_44.1k_sad": {"drums", "bass", "vocals", "other"}, "fma_44.1k": {"musicbg"}}
VALID_N = {"vctk_demand_48k": 500, "musdb18hq_44.1k_sad": 12, "dnr_44.1k": 100, "wham_max_16k": 500,
           "fuss_2src_16k": 200, "fuss_3src_16k": 200, "fuss_4src_16k": 200}
FOUND = sorted(str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").glob("*/*.yaml")
               if p.parent.name not in ("tests", "demo", "custom"))  # tested elsewhere: demo, test, templates
RELEASE = sorted(RELEASE_DATA)

# The allowed deviations from the release (README "Deviations from the release configs"):
#: keys the release lacks may appear only at these neutral defaults
NEUTRAL = {"p_prompt_dropout": 0.0, "sort_prompts": False, "pretrained_model_path": None}
#: the release's `prompt_dropout: true` (never read by their code) is our `p_prompt_dropout` (a probability > 0)
PROMPT_DROPOUT_CONFIG = "unified/tuss.large.2-4src.promptdropout.yaml"
#: trainable parameters (M, 2 decimals) of the unified models
PARAMS_M = {"unified/tuss.medium.2-4src.yaml": 11.13, "unified/tuss.large.2-4src.yaml": 38.21,
            "unified/tuss.large.2-4src.promptdropout.yaml": 38.21,
            "unified/conventional.medium.2-4src.yaml": 14.29, "unified/conventional.large.2-4src.yaml": 42.55}


def _strict_diff(release, ours, path: str) -> list[str]:
    """Differences of two JSON-like trees, types included (an int is not a float, ``True`` is not ``1``)."""
    if type(release) is not type(ours):
        return [f"{path or '<top>'}: release {release!r} ({type(release).__name__}), "
                f"ours {ours!r} ({type(ours).__name__})"]
    if isinstance(release, dict):
        out = []
        for key in list(release) + [k for k in ours if k not in release]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in ours:
                out.append(f"{sub}: missing (release: {release[key]!r})")
            elif key not in release:
                out.append(f"{sub}: not in the release (ours: {ours[key]!r})")
            else:
                out += _strict_diff(release[key], ours[key], sub)
        return out
    if isinstance(release, list):
        if len(release) != len(ours):
            return [f"{path}: release {release!r}, ours {ours!r}"]
        return [d for i, (a, b) in enumerate(zip(release, ours, strict=True))
                for d in _strict_diff(a, b, f"{path}[{i}]")]
    return [] if release == ours else [f"{path}: release {release!r}, ours {ours!r}"]


def release_differences(name: str, data: dict) -> list[str]:
    """What in ``data`` (``yaml.safe_load`` of ``configs/<name>``) differs from the release's ``name``, after the
    allowed deviations; an empty list means the config carries exactly the release's values."""
    out = []
    # YAML keeps the source counts as ints (`1: 0.0`); JSON, hence the fixture, has string keys
    tables = [("num_srcs_and_weights", data.get("num_srcs_and_weights"))]
    tables += [(f"prompts.{p}.num_srcs_and_weights", c.get("num_srcs_and_weights"))
               for p, c in (data.get("prompts") or {}).items() if isinstance(c, dict)]
    for where, table in tables:
        if isinstance(table, dict) and not all(type(k) is int for k in table):
            out.append(f"{where}: keys must be integers, got {list(table)!r}")
    release = copy.deepcopy(RELEASE_DATA[name])
    ours = json.loads(json.dumps(data))
    if name == PROMPT_DROPOUT_CONFIG:
        assert release.pop("prompt_dropout") is True  # the release's key, never read by its code
        p = ours.pop("p_prompt_dropout", None)
        if type(p) is not float or not 0.0 < p < 1.0:
            out.append(f"p_prompt_dropout: must be a probability in (0, 1) replacing prompt_dropout, got {p!r}")
    for key, neutral in NEUTRAL.items():
        if key not in release and key in ours:
            value = ours.pop(key)
            if type(value) is not type(neutral) or value != neutral:
                out.append(f"{key}: not in the release, allowed only at its neutral default {neutral!r}, "
                           f"got {value!r}")
    # the `prompts` table's order is meaningful: sort_prompts orders references by it
    if isinstance(ours.get("prompts"), dict) and list(ours["prompts"]) != list(release["prompts"]):
        out.append(f"prompts: order {list(ours['prompts'])} differs from the release's {list(release['prompts'])}")
    return out + _strict_diff(release, ours, "")


def test_the_23_release_configs_exist():
    assert len(RELEASE) == 23 and set(RELEASE) == EXPECTED
    assert FOUND == RELEASE, f"missing: {sorted(set(RELEASE) - set(FOUND))}, extra: {sorted(set(FOUND) - set(RELEASE))}"


@pytest.mark.parametrize("name", RELEASE)
def test_config_equals_the_release(name):
    path = ROOT / "configs" / name
    assert path.is_file(), f"{path} is missing"
    differences = release_differences(name, yaml.safe_load(path.read_text()))
    assert not differences, "\n".join(differences)


def test_the_comparison_rejects_edits():
    def as_yaml(name):  # the release's data as our YAML holds it (int source-count keys) + the neutral keys
        data = copy.deepcopy(RELEASE_DATA[name])
        data["num_srcs_and_weights"] = {int(k): v for k, v in data["num_srcs_and_weights"].items()}
        for conf in data["prompts"].values():
            if "num_srcs_and_weights" in conf:
                conf["num_srcs_and_weights"] = {int(k): v for k, v in conf["num_srcs_and_weights"].items()}
        for key, value in NEUTRAL.items():
            data.setdefault(key, value)
        return data

    name = "unified/tuss.medium.2-4src.yaml"
    base = as_yaml(name)
    assert release_differences(name, base) == []
    edits = [
        lambda d: d["optimizer_conf"].update(lr=2e-3),                 # a changed value
        lambda d: d["dataset_conf"]["train"].pop("max_num_src"),       # a missing key
        lambda d: d.update(sort_prompts=True),                         # an extra key at a non-neutral value
        lambda d: d.update(p_prompt_dropout=0.1),
        lambda d: d.update(pretrained_model_path="exp/oss/x"),
        lambda d: d.update(new_key=1),                                 # a key neither has
        lambda d: d.update(batch_size=4.0),                            # int -> float
        lambda d: d["trainer_conf"].update(deterministic=1),           # bool -> int
        lambda d: d["trainer_conf"].update(strategy="auto"),
        lambda d: d["model_conf"]["conf_cross_prompt_module"].update(flash_attention=True),
        lambda d: d.update(num_srcs_and_weights={str(k): v for k, v in d["num_srcs_and_weights"].items()}),
        lambda d: d.update(prompts=dict(reversed(list(d["prompts"].items())))),  # same table, other order
        lambda d: d["model_conf"]["prompts"].reverse(),
        lambda d: d["dataset_conf"]["test"]["json_path_and_num_data"].pop(),
    ]
    for i, edit in enumerate(edits):
        data = copy.deepcopy(base)
        edit(data)
        assert release_differences(name, data), f"edit {i} was not detected"

    # the prompt-dropout config: p_prompt_dropout > 0 instead of prompt_dropout, nothing else
    name = PROMPT_DROPOUT_CONFIG
    base = as_yaml(name)
    del base["prompt_dropout"]
    base["p_prompt_dropout"] = 0.2
    assert release_differences(name, base) == []
    for edit in [lambda d: d.update(prompt_dropout=True), lambda d: d.update(p_prompt_dropout=0.0),
                 lambda d: d.pop("p_prompt_dropout"), lambda d: d.update(pretrained_model_path="exp/oss/x"),
                 lambda d: d["optimizer_conf"].update(lr=1e-3)]:
        data = copy.deepcopy(base)
        edit(data)
        assert release_differences(name, data)


@pytest.mark.parametrize("name", RELEASE)
def test_config_comments_the_keys_read_differently(name):
    text = (ROOT / "configs" / name).read_text()
    assert text.startswith(f"# {Path(name).stem}: ")
    assert f"# python train.py --config configs/{name}   ->  exp/oss/{Path(name).stem}/" in text
    for marker in ("# strategy: the release's value", "flash_attention: accepted and not read",
                   "# accepted, not read: no per-segment rescaling", "# val_batch_size:", "# css_datasets:",
                   "--trainer_conf.precision 32", "# pit_loss:", "# Training pools", "# Validation:", "# Test"):
        assert marker in text, f"{name}: no {marker!r} comment"


@pytest.mark.parametrize("name", RELEASE)
def test_config_builds_and_passes_training_checks(name):
    cfg = load_config(ROOT / "configs" / name)
    check_training_config(cfg)
    model = build_model(cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{name}: {trainable / 1e6:.2f} M trainable parameters ({trainable:,})")
    if name in PARAMS_M:
        assert round(trainable / 1e6, 2) == PARAMS_M[name]
    # the values themselves are pinned by test_config_equals_the_release; here, how they combine
    if cfg.model_name == "tuss":  # permutations only among outputs that share a prompt
        assert not cfg.pit_loss and not cfg.get("sort_prompts", False)
    else:  # over all outputs, or a fixed output order over references sorted by the prompts table
        assert cfg.pit_loss or cfg.sort_prompts
        assert cfg.pit_loss == (name.startswith(("unified/", "fuss/")))


@pytest.mark.parametrize("name", RELEASE)
def test_config_data_can_produce_every_prompt_it_draws(name):
    cfg = load_config(ROOT / "configs" / name)
    pools = [Path(p).stem for p in cfg.dataset_conf.train.json_paths]
    provided = set().union(*(POOL_PROMPTS[p] for p in pools))
    # the dataset's own checks, with one stand-in file per provided prompt
    stand_in = {p: SourcePool(p, ["x.wav"], np.array([48000]), np.array([480000]), ["m.json"]) for p in provided}
    dataset = DynamicMixingDataset(stand_in, cfg.prompts, cfg.dataset_conf.train.chunk_size)
    for bg, (parts, _) in BG_COMPONENTS.items():
        if cfg.prompts.get(bg, {}).get("dynamic_mixing_prob", 0) > 0:
            assert provided & set(parts), f"{bg} is summed from {parts}, none of which {pools} provides"
            provided.add(bg)
    sampler = PromptSampler(cfg.prompts, available=provided)
    drawn = sampler.reachable()
    assert drawn <= provided and drawn == dataset.sampler.reachable()
    if cfg.model_name == "tuss":  # specialists have fewer prompt vectors: every drawn prompt has one
        assert drawn <= set(cfg.model_conf.prompts)
    rng = np.random.default_rng(0)
    counts, _ = parse_weights(cfg.num_srcs_and_weights)
    assert counts.max() <= cfg.dataset_conf.train.max_num_src
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


def test_published_hparams_load_unchanged():
    for kind in ("tuss", "conventional"):
        hparams = load_fixture(kind)["hparams"]
        check_training_config(hparams)
        module = SeparationModule(hparams)
        assert module.config.to_dict() == hparams
        assert module.pit_loss == (kind == "conventional") and module.p_prompt_dropout == 0.0

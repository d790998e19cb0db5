"""Fine-tuning with new prompts, dropped prompts and frozen modules (training/finetune.py, docs/finetuning.md): the
state-dict adaptation, freezing, refusals before anything is written, and short runs from the tiny experiment that
find the frozen tensors bit-identical and the new prompt trained."""

import json
import logging
from pathlib import Path

import pytest
import torch

from datasets.manifest import pool_entry, write_manifest
from datasets.synthetic import synthetic_overrides
from nets import build_model, load_model
from training.finetune import adapt_prompts, freeze_parameters, parameter_counts
from training.run import main, train
from utils.checkpoint import read_state_dict
from utils.config import ConfigError, apply_overrides, load_config, save_config

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs/tests/tiny.tuss.yaml"
PROMPTS = ["speech", "sfx", "sfxbg", "drums", "bass", "vocals", "other", "musicbg"]
KEY = "separator.prompts.{}"


def _state(prompts=PROMPTS):
    torch.manual_seed(0)
    return {**{KEY.format(p): torch.randn(4, 1, 1) for p in prompts}, "separator.sos_token": torch.randn(4, 1, 1)}


def test_a_new_prompt_copies_the_named_prompt_or_takes_the_mean(caplog):
    state = _state()
    with caplog.at_level(logging.INFO, "training.finetune"):
        out, how = adapt_prompts(state, [*PROMPTS, "piano", "guitar"], {"piano": "other"})
    assert torch.equal(out[KEY.format("piano")], state[KEY.format("other")])
    assert out[KEY.format("piano")].data_ptr() != state[KEY.format("other")].data_ptr()  # a copy, trained apart
    mean = torch.stack([state[KEY.format(p)] for p in PROMPTS]).mean(0)
    assert torch.equal(out[KEY.format("guitar")], mean)
    assert how == {"piano": "copy of other", "guitar": "mean of 8 pretrained prompts"}
    assert all(torch.equal(out[k], v) for k, v in state.items())  # everything else as it was
    assert "new prompt piano: initialised as the copy of other" in caplog.text
    assert "new prompt guitar: initialised as the mean of 8 pretrained prompts" in caplog.text


def test_a_left_out_pretrained_prompt_is_refused_unless_dropped():
    state = _state()
    with pytest.raises(ConfigError, match=r"leaves out the pretrained prompt\(s\) sfx, musicbg of ckpt.pth.*"
                                          "drop_prompts: true"):
        adapt_prompts(state, [p for p in PROMPTS if p not in ("sfx", "musicbg")], source="ckpt.pth")
    out, how = adapt_prompts(state, ["speech", "piano"], drop_prompts=True)
    assert sorted(k for k in out if "prompts" in k) == [KEY.format("piano"), KEY.format("speech")]
    assert torch.equal(out[KEY.format("piano")], state[KEY.format("speech")])  # the mean of the one kept prompt
    assert how == {"piano": "mean of 1 pretrained prompts"}


@pytest.mark.parametrize(("init", "match"), [
    ({"piano": "organ"}, r"init_new_prompts.piano': 'organ' is not a prompt of the checkpoint \(it has: speech"),
    ({"speech": "other"}, r"init_new_prompts.speech': speech is a pretrained prompt"),
    ({"flute": "other"}, r"init_new_prompts.flute': flute is not in model_conf.prompts.*: piano"),
])
def test_bad_init_new_prompts_entries_are_refused(init, match):
    with pytest.raises(ConfigError, match=match):
        adapt_prompts(_state(), [*PROMPTS, "piano"], init)


def test_freeze_paths_name_modules_or_parameters_and_an_unknown_one_lists_the_top_level():
    model = build_model(TINY)
    frozen = freeze_parameters(model, ["band_split_module", "separator.prompts.speech"])
    assert frozen and all(n.startswith(("band_split_module.", "prompts.speech")) for n in frozen)
    params = dict(model.separator.named_parameters())
    assert not params["prompts.speech"].requires_grad and params["prompts.sfx"].requires_grad
    assert all(not p.requires_grad for n, p in params.items() if n.startswith("band_split_module."))
    trainable, total = parameter_counts(model)
    assert total - trainable == sum(params[n].numel() for n in frozen)
    with pytest.raises(ConfigError, match=r"'freeze': 'cross_prompt' is not a module or parameter of the model; its "
                                          r"top-level modules: band_split_module, cond_tse_module, "
                                          r"cross_prompt_module, prompts, sos_token"):
        freeze_parameters(model, ["cross_prompt"])
    with pytest.raises(ConfigError, match="prompts.piano"):
        freeze_parameters(model, ["prompts.piano"])


# -- runs ----------------------------------------------------------------------------------------------------------

ALL_BUT_PIANO = ["band_split_module", "cross_prompt_module", "cond_tse_module", "sos_token",
                 *(f"prompts.{p}" for p in PROMPTS)]


@pytest.fixture(scope="module")
def piano_data(tiny_corpus, tmp_path_factory):
    """The tiny corpus plus a ``piano`` pool (its ``other`` recordings) in a manifest of its own."""
    tmp = tmp_path_factory.mktemp("piano")
    pools = json.loads(Path(tiny_corpus["pools"]).read_text())["train"]
    piano = {"train": {"piano": [pool_entry(e["path"], e["sample_rate"], e["num_samples"], "piano")
                                 for e in pools["other"]]}}
    manifest = write_manifest(tmp / "piano_pools.json", piano, prompts=[*PROMPTS, "piano"])
    return tmp, manifest


def _finetune_config(tmp: Path, name: str, corpus: dict, piano_manifest: Path | None, pretrained: Path,
                     **extra) -> Path:
    """The tiny config with a ninth prompt, ``piano`` (in the chain after any music stem), one epoch of two steps."""
    config = load_config(TINY)
    apply_overrides(config, synthetic_overrides(corpus))
    train_conf = config["dataset_conf"]["train"]
    train_conf["json_paths"] = [*train_conf["json_paths"], *([str(piano_manifest)] if piano_manifest else [])]
    config["model_conf"]["prompts"] = [*PROMPTS, "piano"]
    for conf in config["prompts"].values():
        conf["next"]["piano"] = 0.3
    config["prompts"]["piano"] = {"next": {**{p: 0.0 for p in PROMPTS}, "drums": 0.5, "bass": 0.5}, "init_prob": 0.5,
                                  "num_appear": 1, "gain": [-10, 0]}
    config["trainer_conf"]["max_epochs"] = 1
    config["trainer_conf"]["enable_progress_bar"] = False
    config["pretrained_model_path"] = str(pretrained)
    config["init_new_prompts"] = {"piano": "other"}
    for key, value in extra.items():
        config[key] = value
    save_config(config, tmp / f"{name}.yaml")
    return tmp / f"{name}.yaml"


@pytest.fixture(scope="module")
def prompt_only(piano_data, tiny_corpus, tiny_experiment):
    """A run of two steps from the tiny experiment with everything frozen but the new prompt's vector."""
    tmp, manifest = piano_data
    config = _finetune_config(tmp, "prompt-only", tiny_corpus, manifest, tiny_experiment, freeze=ALL_BUT_PIANO)
    logger = logging.getLogger("train")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        train(config, tmp / "prompt-only")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    (tmp / "prompt-only" / "train-log.txt").write_text("\n".join(records))
    return tmp / "prompt-only"


def test_prompt_only_finetuning_keeps_every_frozen_tensor_bit_identical(prompt_only, tiny_experiment):
    pretrained = load_model(tiny_experiment).state_dict()
    last = read_state_dict(prompt_only / "checkpoints" / "last.ckpt")
    tuned = {k[len("model."):]: v for k, v in last.items()}
    assert set(tuned) == set(pretrained) | {KEY.format("piano")}
    assert all(torch.equal(tuned[k], v) for k, v in pretrained.items())  # bit-identical, prompts included
    start = pretrained[KEY.format("other")]
    assert not torch.equal(tuned[KEY.format("piano")], start)  # the new prompt trained (from a copy of other)
    assert (prompt_only / "hparams.yaml").is_file()
    ckpt = torch.load(prompt_only / "checkpoints" / "last.ckpt", weights_only=True)
    state = ckpt["optimizer_states"][0]["state"]
    assert len(state) == 1 and state[0]["exp_avg"].shape == start.shape  # one tensor in the optimizer


def test_the_log_gives_trainable_and_total_parameter_counts(prompt_only):
    text = (prompt_only / "train-log.txt").read_text()
    model = build_model(TINY)
    width = model.separator.prompts["speech"].numel()
    total = sum(p.numel() for p in model.parameters()) + width  # and the new prompt's vector
    assert f"model tuss: {width:,} of {total:,} parameters trainable (frozen: band_split_module, " in text


def test_the_finetuned_model_separates_with_the_new_prompt(prompt_only, tiny_experiment):
    tuned, before = load_model(prompt_only), load_model(tiny_experiment)
    assert tuned.prompt_names == (*PROMPTS, "piano")
    torch.manual_seed(1)
    mix = torch.randn(1, 8000)
    with torch.inference_mode():
        old = tuned(mix, [["speech", "sfx"]])
        assert torch.equal(old, before(mix, [["speech", "sfx"]]))  # an original prompt's output: bit-identical
        piano, other = tuned(mix, [["drums", "piano"]]), tuned(mix, [["drums", "other"]])
    assert piano.shape == (1, 2, 8000) and not torch.equal(piano, other)  # changed by training (it started equal)


def test_separate_py_and_the_onnx_export_take_the_new_prompt(prompt_only, tmp_path):
    import numpy as np
    import soundfile as sf

    import separate
    from nets.onnx import OnnxModel, export_onnx

    rng = np.random.default_rng(0)
    wav = tmp_path / "song.wav"
    sf.write(wav, rng.standard_normal(16000).astype(np.float32) * 0.1, 48000, subtype="FLOAT")
    out = tmp_path / "out"
    assert separate.main(["--ckpt_path", str(prompt_only), "--audio_path", str(wav), "--prompts", "drums", "piano",
                          "--audio_output_dir", str(out), "--no_spectrograms"]) == 0
    written = sorted(p.name for p in (out / "wav").iterdir())
    assert written == ["drums0.wav", "mix.wav", "piano1.wav"]
    model = load_model(prompt_only)
    with torch.inference_mode():
        expected = model(torch.from_numpy(sf.read(wav, dtype="float32")[0])[None], [["drums", "piano"]])[0, 1]
    got = sf.read(out / "wav" / "piano1.wav", dtype="float32")[0]
    assert np.abs(got - expected.numpy()).max() < 1e-4  # float WAV in, float WAV out: the model's piano output

    onnx = OnnxModel(export_onnx(model, tmp_path / "tuned.onnx"))
    assert onnx.prompt_names == (*PROMPTS, "piano")
    mix = torch.randn(1, 8000)
    with torch.inference_mode():
        reference = model(mix, [["drums", "piano"]])
    assert torch.allclose(onnx(mix, [["drums", "piano"]]), reference, atol=1e-4)


def test_the_log_names_the_new_prompt_and_the_parameter_counts(piano_data, tiny_corpus, tiny_experiment, caplog):
    tmp, manifest = piano_data
    config = _finetune_config(tmp, "whole", tiny_corpus, manifest, tiny_experiment)
    with caplog.at_level(logging.INFO):
        train(config, tmp / "whole", {"trainer_conf.limit_train_batches": "1", "dataset_conf.valid": "null"})
    assert "new prompt piano: initialised as the copy of other" in caplog.text
    model = build_model(config)
    total = sum(p.numel() for p in model.parameters())
    assert f"{total / 1e6:.2f} M trainable parameters;" in caplog.text  # nothing frozen: no "of" part
    tuned = read_state_dict(tmp / "whole" / "checkpoints" / "last.ckpt")
    pretrained = load_model(tiny_experiment).state_dict()
    changed = [k for k, v in pretrained.items() if not torch.equal(tuned["model." + k], v)]
    assert len(changed) > len(pretrained) // 2  # the whole network trained


@pytest.mark.parametrize(("case", "match"), [
    ("no pool", r"new prompt 'piano' has no training recordings in .*pools.json \(their prompts: bass, drums"),
    ("init source", r"init_new_prompts.piano': 'organ' is not a prompt of"),
    ("left out", r"leaves out the pretrained prompt\(s\) sfx"),
    ("freeze", r"'freeze': 'encoder' is not a module or parameter of the model"),
    ("frozen all", r"'freeze' leaves no parameter to train"),
    ("shape", r"does not fit its config: shape mismatch: separator.prompts.speech"),
    ("nan", r"other-shape.pth holds NaN or infinite weights in 1 tensor\(s\) \(model.separator.sos_token\)"),
])
def test_bad_finetuning_configs_exit_2_and_write_nothing(case, match, piano_data, tiny_corpus, tiny_experiment,
                                                         tmp_path, capsys):
    _, manifest = piano_data
    extra: dict = {}
    pretrained = tiny_experiment
    if case == "init source":
        extra["init_new_prompts"] = {"piano": "organ"}
    elif case == "freeze":
        extra["freeze"] = ["encoder"]
    elif case == "frozen all":
        extra["freeze"] = [*ALL_BUT_PIANO, "prompts.piano"]
    elif case in ("shape", "nan"):  # a pretrained prompt vector of another width; a NaN weight
        state = read_state_dict(next((tiny_experiment / "checkpoints").glob("epoch=*.ckpt")))
        if case == "shape":
            state["model.separator.prompts.speech"] = torch.zeros(3, 1, 1)
        else:
            state["model.separator.sos_token"][0] = float("inf")
        pretrained = tmp_path / "other-shape.pth"
        torch.save(state, pretrained)
    config = _finetune_config(tmp_path, case.replace(" ", "-"), tiny_corpus, None if case == "no pool" else manifest,
                              pretrained, **extra)
    if case == "left out":
        cfg = load_config(config)
        cfg["model_conf"]["prompts"] = [p for p in cfg["model_conf"]["prompts"] if p != "sfx"]
        save_config(cfg, config)
    exp = tmp_path / "exp"
    assert main(["--config", str(config), "--exp_dir", str(exp)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert __import__("re").search(match, err[0]), err[0]
    assert not exp.exists()  # refused before anything was written


# -- the templates -------------------------------------------------------------------------------------------------

TEMPLATES = ("configs/custom/tuss.demo.finetune.yaml", "configs/custom/tuss.medium.finetune.yaml")


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_templates_are_valid_configs_with_a_new_prompt_in_the_chain(name):
    from datasets.sampler import PromptSampler
    from training.settings import check_training_config

    cfg = load_config(ROOT / name)
    check_training_config(cfg)
    assert cfg.model_conf.prompts[-1] == "piano" and cfg.init_new_prompts == {"piano": "other"}
    assert "datasets/json_files/my_corpus_pools.json" in cfg.dataset_conf.train.json_paths
    assert "piano" in PromptSampler(cfg.prompts).reachable()
    text = (ROOT / name).read_text()
    assert "python -m dataprep.build_folders --root my_recordings --name my_corpus" in text
    assert all(word in text for word in ("freeze", "init_prob", "num_appear", "next"))


def test_the_demo_template_loads_the_bundled_model_with_the_new_prompt():
    from training.run import load_pretrained

    cfg = load_config(ROOT / TEMPLATES[0])
    model = build_model(cfg)
    assert load_pretrained(model, cfg.pretrained_model_path, cfg.init_new_prompts) == {"piano": "copy of other"}
    bundled = load_model("tuss.demo").state_dict()
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in bundled.items())
    assert torch.equal(state[KEY.format("piano")], bundled[KEY.format("other")])


def test_the_medium_template_is_the_published_medium_network_plus_the_new_prompt():
    layout = json.loads((ROOT / "tests/fixtures/official_tuss_medium_state_dict_layout.json").read_text())["keys"]
    expected = {k[len("model."):]: tuple(v) for k, v in layout.items()}
    expected[KEY.format("piano")] = expected[KEY.format("other")]
    model = build_model(load_config(ROOT / TEMPLATES[1]))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected


def test_zz_a_resumed_finetuning_freezes_the_same_parameters(prompt_only, piano_data, tiny_corpus, tiny_experiment):
    """(Runs last in this file: it resumes the module's prompt-only experiment for a second epoch.)"""
    tmp, manifest = piano_data
    config = _finetune_config(tmp, "prompt-only", tiny_corpus, manifest, tiny_experiment, freeze=ALL_BUT_PIANO)
    train(config, prompt_only, {"trainer_conf.max_epochs": "2"})
    ckpt = torch.load(prompt_only / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and len(ckpt["optimizer_states"][0]["param_groups"][0]["params"]) == 1
    pretrained = load_model(tiny_experiment).state_dict()
    tuned = {k[len("model."):]: v for k, v in ckpt["state_dict"].items()}
    assert all(torch.equal(tuned[k], v) for k, v in pretrained.items())  # still bit-identical after the resume

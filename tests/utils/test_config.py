"""Config loading: published hparams load unchanged, attribute access, overrides, clear errors."""

from pathlib import Path

import pytest
import yaml

from tests.helpers import load_fixture
from utils.config import Config, ConfigError, apply_overrides, load_config, save_config


def test_published_hparams_round_trip(tmp_path):
    hp = load_fixture("tuss")["hparams"]
    hp["some_future_key"] = {"nested": [1, 2, {"x": None}]}  # unknown keys are kept
    path = tmp_path / "hparams.yaml"
    path.write_text(yaml.safe_dump(hp, sort_keys=False))
    cfg = load_config(path)
    assert cfg.model_conf.conf_cross_prompt_module.freq_ffn_config[0].conf.conv1d_kernel == 4
    assert cfg.dataset_conf.valid.json_path_and_num_data[0] == ["datasets/json_files/vctk_demand_48k.json", 500]
    assert cfg.num_srcs_and_weights[2] == 0.333  # integer keys survive
    assert cfg.some_future_key.nested[2].x is None
    assert cfg.to_dict() == hp
    save_config(cfg, tmp_path / "copy.yaml")
    assert load_config(tmp_path / "copy.yaml").to_dict() == hp
    assert list(load_config(tmp_path / "copy.yaml")) == list(hp)  # key order kept


def test_attribute_access_and_errors(tmp_path):
    cfg = Config({"a": {"b": 1}})
    cfg.c = {"d": 2}
    assert cfg.c.d == 2 and isinstance(cfg.c, Config)
    with pytest.raises(AttributeError, match="config has no key 'zzz'"):
        _ = cfg.zzz
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(bad)
    bad.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):  # safe_load: no code execution
        load_config(bad)


def test_dotted_overrides():
    cfg = Config({"trainer_conf": {"max_epochs": 150}, "optimizer_conf": {"lr": 1e-3}})
    apply_overrides(cfg, {"trainer_conf.max_epochs": "2", "optimizer_conf.lr": "5e-4", "new.deep.key": "[1, 2]",
                          "trainer_conf.precision": "32"})
    assert cfg.trainer_conf.max_epochs == 2
    assert cfg.optimizer_conf.lr == 5e-4
    assert cfg.new.deep.key == [1, 2]
    assert cfg.trainer_conf.precision == 32
    with pytest.raises(ConfigError, match="'max_epochs' is not a mapping"):
        apply_overrides(cfg, {"trainer_conf.max_epochs.x": "1"})


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))


def _capped(code: str, cwd, seconds: int = 60):
    """``python -c code`` with 8 GiB of address space and a time limit: an expanding config fails, not the machine."""
    import subprocess
    import sys

    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30)); "
    return subprocess.run([sys.executable, "-c", limit + code], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=seconds, env={"OMP_NUM_THREADS": "1",
                                                                                "PATH": "/usr/bin:/bin"})


def test_an_alias_bomb_is_refused_quickly_under_a_memory_cap(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    assert len(BOMB) < 600  # 9^9 (387 million) values once expanded
    with pytest.raises(ConfigError, match="recursive alias|expands"):
        load_config(_recursive())
    result = _capped(f"from utils.config import load_config; load_config({str(bomb)!r})", tmp_path)  # not here:
    assert result.returncode == 1 and "ConfigError" in result.stderr, result.stderr[-2000:]  # an unfixed one hangs
    assert "bomb.yaml expands to more than 200000 values (YAML aliases" in result.stderr
    ok = tmp_path / "aliases.yaml"  # a few aliases, as configs use them, still load
    ok.write_text("base: &base {lr: 0.001, eps: 1.0e-08}\noptimizer_conf: *base\nother: *base\n")
    assert load_config(ok).other == {"lr": 0.001, "eps": 1.0e-08}


def _recursive():
    node: list = [1]
    node.append(node)
    return {"a": node}


def test_a_huge_config_file_is_refused_by_its_size_unread(tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(100 * 2**20)  # 100 MiB (sparse: nothing to parse in the time of a test)
    with pytest.raises(ConfigError, match=r"big.yaml is 100.0 MiB: refused unread"):
        load_config(big)


def test_train_and_separate_refuse_an_alias_bomb_with_exit_2(tmp_path):
    import shutil

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    result = _capped(f"import runpy, sys; sys.argv = ['train.py', '--config', {str(bomb)!r}]; "
                     "runpy.run_path('train.py', run_name='__main__')", tmp_path, seconds=120)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: config file"), \
        result.stderr[-2000:]
    model = tmp_path / "model"  # a tampered hparams.yaml beside the weights of the bundled model
    shutil.copytree(Path(__file__).resolve().parents[2] / "pretrained_models" / "tuss.demo" / "checkpoints",
                    model / "checkpoints")
    (model / "hparams.yaml").write_text(BOMB)
    result = _capped(f"import sys, separate; sys.exit(separate.main(['--ckpt_path', {str(model)!r}, '--audio_path', "
                     "'examples/demo_cass.wav', '--audio_output_dir', " + repr(str(tmp_path / "out")) + "]))",
                     tmp_path, seconds=120)
    assert result.returncode == 2 and "expands to more than" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "out").exists()

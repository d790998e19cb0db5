"""Config loading: published hparams load unchanged, attribute access, overrides, clear errors."""

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

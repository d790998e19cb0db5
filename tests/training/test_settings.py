"""training.settings: one table of settings from which the dataclass, its reading, the schema and --help derive."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from training.arguments import usage_text
from training.settings import DEFAULTS, SCHEMA, SETTINGS, TrainingSettings, check_training_config
from utils.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_the_dataclass_fields_and_defaults_are_the_rows_of_the_table():
    rows = {s.name: s for s in SETTINGS if s.name is not None}
    fields = dataclasses.fields(TrainingSettings)
    assert [f.name for f in fields] == list(rows)
    defaults = TrainingSettings()
    assert all(getattr(defaults, name) == row.default for name, row in rows.items())
    assert TrainingSettings().optimizer_conf is not TrainingSettings().optimizer_conf  # no shared mutable default
    assert DEFAULTS == {"p_prompt_dropout": 0.0, "pretrained_model_path": None, "save_last_every_n_steps": 0,
                        "max_nonfinite_steps": 20, "sort_prompts": False, "init_new_prompts": {},
                        "drop_prompts": False, "freeze": ()}


def test_the_schema_holds_the_check_of_every_top_level_row_and_the_parent_of_every_nested_one():
    for s in SETTINGS:
        if "." in s.key:
            assert s.check is None and s.key.split(".")[0] in SCHEMA, s.key
        else:
            assert s.check is not None and SCHEMA[s.key] is s.check, s.key
    assert len({s.key for s in SETTINGS}) == len(SETTINGS)


def test_from_config_reads_defaults_nulls_and_nested_keys():
    s = TrainingSettings.from_config({"seed": None, "scheduler_name": None, "css_datasets": ["dnr"],
                                      "trainer_conf": {"limit_train_batches": 7},
                                      "dataset_conf": {"train": {"max_num_src": 3}}, "optimizer_conf": None})
    assert s.seed == 0 and s.scheduler_name is None  # null: the default, except where null is a value
    assert s.css_datasets == frozenset({"dnr"}) and s.steps_per_epoch == 7 and s.max_num_src == 3
    assert s.optimizer_conf == {"lr": 1e-3} and s.lr == 1e-3
    assert TrainingSettings.from_config({"trainer_conf": None, "dataset_conf": {"train": None}}).max_num_src is None


def test_help_lists_the_rows_with_a_help_line_and_their_defaults():
    text = usage_text()
    rows = {line.split()[0][2:]: line.split()[1] for line in text.splitlines() if line.startswith("  --")}
    assert rows == {s.key: s.shown_default for s in SETTINGS if s.help}
    assert rows["p_prompt_dropout"] == "0.0" and rows["pretrained_model_path"] == "null"


def test_the_checks_import_torch_and_lightning_only_when_they_need_them():
    code = ("import sys\n"
            "from training.settings import check_training_config\n"
            "check_training_config({'batch_size': 2, 'seed': 1, 'p_prompt_dropout': 0.1}, partial=True)\n"
            "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))\n"
            "try:\n"
            "    check_training_config({'trainer_conf': {'max_epoch': 2}}, partial=True)\n"
            "except ValueError as err:\n"
            "    print(err)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["[]",
                                        "unknown config key 'trainer_conf.max_epoch' (did you mean 'max_epochs'?)"]


@pytest.mark.parametrize(("config", "message"), [
    ({"model_name": "unet"}, "config key 'model_name' must be one of 'tuss', 'bslocoformer_stack', got 'unet'"),
    ({"loss_func_name": "l1"}, "config key 'loss_func_name' must be one of 'snr_with_zero_refs', 'snr', 'si_snr', "
                               "got 'l1'"),
    ({"optimizer_name": "sgd"}, "config key 'optimizer_name' must be one of 'adam', 'adamw', got 'sgd'"),
    ({"scheduler_conf": {"patiense": 2}}, "unknown config key 'scheduler_conf.patiense' (did you mean 'patience'?)"),
    ({"model_checkpoint": {"monitr": "x"}}, "unknown config key 'model_checkpoint.monitr' (did you mean 'monitor'?)"),
])
def test_the_lazily_resolved_checks_give_the_same_messages(config, message):
    with pytest.raises(ConfigError) as err:
        check_training_config(config, partial=True)
    assert str(err.value) == message

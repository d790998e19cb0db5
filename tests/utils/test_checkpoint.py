"""Checkpoint utilities: averaging, file discovery, config lookup."""

import pytest
import torch

from utils.checkpoint import (
    CheckpointError,
    average_checkpoints,
    average_state_dicts,
    checkpoint_files,
    find_config,
    read_state_dict,
    resolve_checkpoint,
)


def test_average_of_two_checkpoints_is_the_mean(tmp_path):
    a = {"w": torch.tensor([1.0, 2.0]), "steps": torch.tensor(3), "h": torch.tensor([0.5], dtype=torch.float16)}
    b = {"w": torch.tensor([3.0, 6.0]), "steps": torch.tensor(4), "h": torch.tensor([1.5], dtype=torch.float16)}
    avg = average_state_dicts([a, b])
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0]))
    assert avg["steps"].item() == 7  # integer tensors are summed, as in the published averaging
    assert avg["h"].dtype == torch.float16 and avg["h"].item() == 1.0
    with pytest.raises(CheckpointError, match="different keys"):
        average_state_dicts([a, {"w": a["w"]}])


def test_average_of_checkpoint_files_reads_pth_and_ckpt(tmp_path):
    torch.save({"model.w": torch.tensor([1.0]), "model.n": torch.tensor(2)}, tmp_path / "a.pth")
    torch.save({"state_dict": {"model.w": torch.tensor([2.0]), "model.n": torch.tensor(3)}, "epoch": 1},
               tmp_path / "b.ckpt")
    avg = average_checkpoints([tmp_path / "a.pth", str(tmp_path / "b.ckpt")])
    assert avg["model.w"].item() == 1.5 and avg["model.n"].item() == 5
    assert average_checkpoints([tmp_path / "a.pth"])["model.w"].item() == 1.0
    with pytest.raises(CheckpointError, match="no state dicts to average"):
        average_checkpoints([])
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        average_checkpoints([tmp_path / "a.pth", tmp_path / "missing.ckpt"])


def test_experiment_directory_discovery(tmp_path):
    exp = tmp_path / "exp"
    (exp / "checkpoints").mkdir(parents=True)
    (exp / "hparams.yaml").write_text("model_name: tuss\n")
    for name, value in [("epoch=1.ckpt", 1.0), ("epoch=2.ckpt", 3.0), ("last.ckpt", 100.0)]:
        torch.save({"state_dict": {"model.w": torch.tensor([value])}, "epoch": 1}, exp / "checkpoints" / name)
    assert [p.name for p in checkpoint_files(exp)] == ["epoch=1.ckpt", "epoch=2.ckpt"]
    state, config = resolve_checkpoint(exp)
    assert state["model.w"].item() == 2.0 and config == exp / "hparams.yaml"
    assert find_config(exp / "checkpoints" / "last.ckpt") == exp / "hparams.yaml"
    assert read_state_dict(exp / "checkpoints" / "last.ckpt")["model.w"].item() == 100.0
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="no checkpoints"):
        checkpoint_files(empty)

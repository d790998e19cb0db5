"""Checkpoint utilities: averaging, file discovery, config lookup, safetensors files."""

import json

import pytest
import torch
from safetensors.torch import save_file

from utils.checkpoint import (
    CheckpointError,
    average_checkpoints,
    average_state_dicts,
    checkpoint_files,
    find_config,
    read_state_dict,
    resolve_checkpoint,
    save_safetensors,
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


def test_a_safetensors_file_reads_to_equal_tensors(tmp_path):
    base = torch.randn(3, 4)
    state = {"model.w": base, "model.row": base[1], "model.t": base.t(), "model.h": torch.randn(5).half(),
             "model.n": torch.tensor(7), "model.empty": torch.zeros(0)}  # shared storage, a non-contiguous view
    path = save_safetensors(state, tmp_path / "m" / "model.safetensors")
    assert path == tmp_path / "m" / "model.safetensors"
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]  # no temporary file left
    back = read_state_dict(path)
    assert sorted(back) == sorted(state)  # the format orders tensors by itself
    for key, value in state.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
    # a file of another writer (safetensors itself) reads too, and averages with a .pth
    save_file({"model.w": torch.tensor([1.0])}, tmp_path / "other.safetensors")
    torch.save({"model.w": torch.tensor([3.0])}, tmp_path / "other.pth")
    assert average_checkpoints([tmp_path / "other.safetensors", tmp_path / "other.pth"])["model.w"].item() == 2.0


def test_a_model_folder_safetensors_finds_the_hparams_beside_it(tmp_path):
    exp = tmp_path / "exp"
    model = exp / "bundle"  # a model folder inside an experiment: its own config wins
    (model / "checkpoints").mkdir(parents=True)
    (exp / "hparams.yaml").write_text("model_name: other\n")
    (model / "hparams.yaml").write_text("model_name: tuss\n")
    save_safetensors({"model.w": torch.tensor([1.0])}, model / "model.safetensors")
    torch.save({"model.w": torch.tensor([1.0])}, model / "checkpoints" / "model.pth")
    assert find_config(model / "model.safetensors") == model / "hparams.yaml"
    assert find_config(model / "checkpoints" / "model.pth") == model / "hparams.yaml"
    state, config = resolve_checkpoint(model / "model.safetensors")
    assert state["model.w"].item() == 1.0 and config == model / "hparams.yaml"
    lone = tmp_path / "lone" / "x.safetensors"
    save_safetensors({"model.w": torch.tensor([1.0])}, lone)
    with pytest.raises(CheckpointError, match="no hparams.yaml for checkpoint"):
        resolve_checkpoint(lone)


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "pickle", "no tensors"])
def test_a_corrupt_safetensors_file_is_a_checkpoint_error_naming_it(tmp_path, kind):
    good = save_safetensors({"model.w": torch.randn(64)}, tmp_path / "good.safetensors").read_bytes()
    path = tmp_path / f"{kind}.safetensors"
    if kind == "pickle":
        torch.save({"model.w": torch.randn(4)}, path)  # a torch file under a safetensors name
    elif kind == "no tensors":
        save_file({}, path)
    else:
        path.write_bytes({"truncated": good[:-10], "garbage": b"not a safetensors file", "empty": b""}[kind])
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    first = str(err.value).splitlines()[0]
    assert str(path) in first and ("safetensors" in first or "no state dict" in first)


@pytest.mark.parametrize("name", ["../../outside/evil.ckpt", "/etc/passwd", "sub/inner.ckpt", "..", "", "link.ckpt",
                                  "sub\\inner.ckpt"])
def test_a_top_k_record_is_confined_to_its_folder(tmp_path, name):
    from utils.checkpoint import checkpoint_files, read_top_k_record

    exp = tmp_path / "exp"
    folder = exp / "checkpoints"
    (folder / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    torch.save({"w": torch.zeros(1)}, outside / "evil.ckpt")
    torch.save({"w": torch.ones(1)}, folder / "sub" / "inner.ckpt")
    torch.save({"w": torch.ones(1)}, folder / "good.ckpt")
    (folder / "link.ckpt").symlink_to(outside / "evil.ckpt")
    (folder / "top_k.json").write_text(json.dumps({"monitor": "val/loss", "mode": "min",
                                                   "checkpoints": {"good.ckpt": 1.0, name: 0.5}}))
    with pytest.raises(CheckpointError, match="top_k.json (names|is not a readable)"):
        read_top_k_record(folder)
    with pytest.raises(CheckpointError):
        checkpoint_files(exp)
    (folder / "top_k.json").write_text(json.dumps({"checkpoints": {"good.ckpt": 1.0}}))
    assert checkpoint_files(exp) == [folder / "good.ckpt"]

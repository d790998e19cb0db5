"""training.bundle: an experiment's checkpoints averaged into the published layout (hparams.yaml + model.pth)."""

import torch

from nets import load_model
from tests.helpers import load_fixture, tiny_tuss_hparams, write_published_layout
from training.bundle import bundle_model, main
from utils.config import load_config


def _experiment(tmp_path):
    fx = load_fixture("tuss")
    sd = fx["state_dict"]
    other = {k: v + 0.5 if v.is_floating_point() else v for k, v in sd.items()}
    exp = tmp_path / "exp"
    write_published_layout(exp, fx["hparams"], sd, "epoch=1-step=10.ckpt")
    write_published_layout(exp, fx["hparams"], other, "epoch=2-step=20.ckpt")
    write_published_layout(exp, fx["hparams"], {k: v * 0 for k, v in sd.items()}, "last.ckpt")  # never averaged
    return exp, fx, sd


def test_bundle_averages_the_kept_checkpoints_into_a_loadable_pth(tmp_path):
    exp, fx, sd = _experiment(tmp_path)
    out = tmp_path / "bundle"
    pth = bundle_model(exp, out)
    assert pth == out / "checkpoints" / "model.pth"
    saved = torch.load(pth, weights_only=True)
    assert list(saved) == list(sd) and all(k.startswith("model.") for k in saved)
    key = next(k for k, v in sd.items() if v.is_floating_point())
    torch.testing.assert_close(saved[key], sd[key] + 0.25)  # mean of sd and sd + 0.5; last.ckpt left out
    assert load_config(out / "hparams.yaml") == load_config(exp / "hparams.yaml")
    mix = fx["mix"][:, :8000]
    prompts = [list(fx["hparams"]["model_conf"]["prompts"][:2])]
    with torch.inference_mode():
        torch.testing.assert_close(load_model(pth)(mix, prompts), load_model(exp)(mix, prompts))
    # chosen checkpoints only
    only = bundle_model(exp, tmp_path / "one", ckpts=[exp / "checkpoints" / "epoch=1-step=10.ckpt"])
    torch.testing.assert_close(torch.load(only, weights_only=True)[key], sd[key])


def test_bundle_refuses_weights_that_do_not_fit_the_config_and_writes_nothing(tmp_path, capsys):
    exp, _, _ = _experiment(tmp_path)
    wrong = tmp_path / "wrong.yaml"
    prompts = load_fixture("tuss")["hparams"]["model_conf"]["prompts"]
    write_published_layout(tmp_path / "w", tiny_tuss_hparams(prompts=[*prompts, "extra"]), {"x": torch.zeros(1)})
    wrong.write_text((tmp_path / "w" / "hparams.yaml").read_text())
    out = tmp_path / "bundle"
    assert main([str(exp), str(out), "--config", str(wrong)]) == 2  # input error
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
    assert main([str(tmp_path / "missing"), str(out)]) == 2
    assert "experiment directory not found" in capsys.readouterr().err
    assert main([str(exp), str(out)]) == 0 and (out / "checkpoints" / "model.pth").is_file()

"""training.bundle: an experiment's checkpoints averaged into the published layout (hparams.yaml + model.pth), the
same weights as model.safetensors, and the model card README.md."""

import shutil

import soundfile as sf
import torch
from safetensors.torch import load_file

import training.bundle as bundle
from nets import build_model, load_model
from separate import main as separate_main
from tests.helpers import load_fixture, tiny_tuss_hparams, tone_noise, write_published_layout, write_wav
from training.bundle import CARD_MARK, bundle_model, main, write_card
from training.run import load_pretrained
from utils.atomic import WriteError
from utils.config import load_config, save_config


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


def _same_tensors(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bundle_writes_the_same_weights_as_safetensors_and_a_model_card(tmp_path):
    exp, fx, sd = _experiment(tmp_path)
    out = tmp_path / "tiny.bundle"
    pth = bundle_model(exp, out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "checkpoints", "hparams.yaml", "model.safetensors"]
    saved = torch.load(pth, weights_only=True)
    tensors = load_file(out / "model.safetensors")
    _same_tensors(tensors, saved)
    assert all(k.startswith("model.separator.") for k in tensors)
    mix = torch.randn(1, 4096, generator=torch.Generator().manual_seed(0))
    prompts = [["speech", "sfx"]]
    with torch.inference_mode():
        assert torch.equal(load_model(out / "model.safetensors")(mix, prompts), load_model(pth)(mix, prompts))

    card = (out / "README.md").read_text()
    assert card.startswith(CARD_MARK) and "# tiny.bundle" in card
    assert all(f"`{p}`" in card for p in fx["hparams"]["model_conf"]["prompts"])
    assert "| sample rate | 48000 Hz |" in card
    assert f"{sum(v.numel() for v in sd.values()):,}" in card
    assert "fft size 2048, window length 2048 (sqrt_hann window), hop 512" in card
    assert "`datasets/json_files/vctk_48k.json`" in card and "`datasets/json_files/fuss_4src_16k.json`" in card
    assert "training steps: 30 (epoch 3" in card  # the Lightning .ckpt files of the helper
    assert "`checkpoints/epoch=1-step=10.ckpt` (epoch 3, step 30)" in card and "last.ckpt" not in card
    assert "fine-tuned from: none recorded" in card and "License: same as this repository's code." in card
    assert f"python separate.py --ckpt_path {out} " in card and f'load_model("{out}")' in card
    assert "Not evaluated yet" in card


def test_the_card_copies_the_evaluation_and_the_pretrained_weights_licence(tmp_path):
    exp, fx, sd = _experiment(tmp_path)
    table = "| dataset | prompt | snr |\n| --- | --- | ---: |\n| d | all | 4.47 |\n\nMeans over items.\n"
    (exp / "result.md").write_text(table)
    parent = tmp_path / "parent"
    write_published_layout(parent, fx["hparams"], sd)
    (parent / "README.md").write_text("# parent\n\nLicense: CC BY-NC 4.0 (see LICENSE)\n")
    cfg = load_config(exp / "hparams.yaml")
    cfg["pretrained_model_path"] = str(parent / "checkpoints" / "model.pth")
    save_config(cfg, exp / "hparams.yaml")
    out = tmp_path / "out"
    bundle_model(exp, out)
    card = (out / "README.md").read_text()
    assert table.strip() in card  # as eval.py wrote it
    assert f"fine-tuned from: `{parent / 'checkpoints' / 'model.pth'}`" in card
    assert "\nLicense: CC BY-NC 4.0 (see LICENSE)\n" in card and str(parent / "README.md") in card
    middle = tmp_path / "middle"  # a fine-tuning of the parent, without a card: the parent's licence, two steps back
    write_published_layout(middle, {**fx["hparams"], "pretrained_model_path": str(parent)}, sd)
    cfg["pretrained_model_path"] = str(middle / "checkpoints" / "model.pth")
    save_config(cfg, exp / "hparams.yaml")
    bundle_model(exp, out)
    card = (out / "README.md").read_text()
    assert "\nLicense: CC BY-NC 4.0 (see LICENSE)\n" in card and str(parent / "README.md") in card
    lone = tmp_path / "lone.pth"  # weights of unknown origin
    torch.save(sd, lone)
    cfg["pretrained_model_path"] = str(lone)
    save_config(cfg, exp / "hparams.yaml")
    bundle_model(exp, out)  # our own card is replaced
    card = (out / "README.md").read_text()
    assert "License: not found for the pretrained weights" in card and "check their licence" in card
    assert "same as this repository's code" not in card


def test_card_only_adds_safetensors_and_a_card_to_a_model_folder(tmp_path, capsys):
    fx = load_fixture("tuss")
    model = tmp_path / "tuss.tiny"
    pth = write_published_layout(model, fx["hparams"], fx["state_dict"])
    (model / "result.md").write_text("| dataset | prompt | snr |\n| --- | --- | ---: |\n| all | all | 1.00 |\n")
    hparams = model / "hparams.yaml"
    hparams.write_text("# tuss.tiny: random weights\n# for the tests\n\n" + hparams.read_text())
    assert main(["--card-only", str(model)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in model.iterdir()) == ["README.md", "checkpoints", "hparams.yaml", "model.safetensors",
                                                      "result.md"]
    _same_tensors(load_file(model / "model.safetensors"), torch.load(pth, weights_only=True))
    card = (model / "README.md").read_text()
    assert "# tuss.tiny" in card and "| all | all | 1.00 |" in card and "training steps: unknown" in card
    assert "```text\ntuss.tiny: random weights\nfor the tests\n```" in card  # the config's own notes
    assert write_card(model) == (model / "model.safetensors", model / "README.md")  # its own card: rewritten
    (model / "README.md").write_text("# written by hand\n")
    before = _files(model)
    assert main(["--card-only", str(model)]) == 2  # a README.md it did not write is kept
    assert "was not written by python -m training.bundle" in capsys.readouterr().err
    assert _files(model) == before
    assert main(["--card-only", str(tmp_path / "missing")]) == 2
    assert main(["--card-only", str(model), str(tmp_path), str(tmp_path)]) == 2  # not with EXP OUT
    assert main([str(tmp_path)]) == 2  # no OUT
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: give the experiment directory")


def test_card_only_after_an_evaluation_keeps_what_the_bundle_recorded(tmp_path):
    exp, _, sd = _experiment(tmp_path)
    out = tmp_path / "out"
    bundle_model(exp, out)
    (out / "result.md").write_text("| dataset | prompt | snr |\n| --- | --- | ---: |\n| all | all | 2.50 |\n")
    write_card(out)  # as after `python eval.py --ckpt_path out`
    card = (out / "README.md").read_text()
    assert "| all | all | 2.50 |" in card and "training steps: 30 (epoch 3" in card
    assert f"experiment: `{exp}`" in card and "`checkpoints/epoch=2-step=20.ckpt` (epoch 3, step 30)" in card
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}, out / "checkpoints" / "model.pth")
    write_card(out)  # other weights: what the old header said is not about them
    card = (out / "README.md").read_text()
    assert "training steps: unknown" in card and "averaged checkpoints: unknown" in card and "experiment:" not in card
    _same_tensors(load_file(out / "model.safetensors"), torch.load(out / "checkpoints" / "model.pth",
                                                                    weights_only=True))


def test_a_failed_write_leaves_the_output_folder_as_it_was(tmp_path, monkeypatch):
    exp, _, _ = _experiment(tmp_path)
    out = tmp_path / "out"
    bundle_model(exp, out, ckpts=[exp / "checkpoints" / "epoch=1-step=10.ckpt"])
    before = _files(out)

    def full_disk(state, path, metadata=None):
        raise WriteError(28, f"cannot write {path}: No space left on device")

    monkeypatch.setattr(bundle, "save_safetensors", full_disk)
    assert main([str(exp), str(out)]) == 1
    assert _files(out) == before and sorted(p.name for p in out.iterdir()) == sorted(
        ["README.md", "checkpoints", "hparams.yaml", "model.safetensors"])  # no staging folder left
    fresh = tmp_path / "fresh" / "model"
    assert main([str(exp), str(fresh)]) == 1
    assert not (tmp_path / "fresh").exists()


def test_a_bundled_tiny_experiment_as_safetensors_for_pretraining_and_separate_py(tiny_experiment, tmp_path):
    out = tmp_path / "tiny"
    pth = bundle_model(tiny_experiment, out)
    card = (out / "README.md").read_text()
    assert "training steps: 4 (epoch 1" in card  # Lightning's own checkpoints of the two epochs
    assert "`checkpoints/epoch=0-step=2.ckpt` (epoch 0, step 2)" in card
    cfg = load_config(out / "hparams.yaml")
    cfg["pretrained_model_path"] = str(out / "model.safetensors")  # train.py's initialisation
    model = build_model(cfg)
    load_pretrained(model, cfg["pretrained_model_path"])
    expected = torch.load(pth, weights_only=True)
    assert all(torch.equal(v, expected["model." + k]) for k, v in model.state_dict().items())

    wav = write_wav(tmp_path / "in.wav", tone_noise(8000, 16000), 16000, "FLOAT")
    stems = {}
    for name, ckpt in [("pth", pth), ("safetensors", out / "model.safetensors")]:
        dest = tmp_path / f"sep_{name}"
        assert separate_main(["--ckpt_path", str(ckpt), "--audio_path", str(wav), "--prompts", "speech", "sfx",
                              "--no_spectrograms", "--bit_depth", "32", "--audio_output_dir", str(dest),
                              "--quiet"]) == 0
        stems[name] = {p.name: sf.read(str(p))[0] for p in sorted((dest / "wav").iterdir())}
    assert list(stems["pth"]) == ["mix.wav", "sfx1.wav", "speech0.wav"]
    assert all((stems["pth"][n] == stems["safetensors"][n]).all() for n in stems["pth"])
    shutil.rmtree(out)

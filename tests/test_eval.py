"""eval.py on a synthetic test manifest: result files whose numbers match independently computed metrics."""

import copy
import json

import numpy as np
import pytest
import soundfile as sf
import torch

import eval as eval_cli
from nets import load_model
from tests.helpers import load_fixture, write_published_layout

SR = 48000  # the model's rate: no resampling, so the independent computation below is exact


def _si_snr(est, ref):
    alpha = np.dot(est, ref) / np.dot(ref, ref)
    target = alpha * ref
    return 10 * np.log10(np.sum(target**2) / np.sum((est - target) ** 2))


def _snr(est, ref):
    return 10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2))


@pytest.fixture
def experiment(tmp_path):
    """A tiny TUSS experiment directory whose test set is a 3-item synthetic manifest (speech + sfxbg)."""
    rng = np.random.default_rng(0)
    items = {}
    for i in range(3):
        n = SR // 2 + 1000 * i
        t = np.arange(n) / SR
        speech = (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
        noise = (0.1 * rng.standard_normal(n)).astype(np.float32)
        paths = {}
        for key, sig in [("speech_1", speech), ("sfxbg_1", noise)]:
            paths[key] = str(tmp_path / f"{key}_{i}.wav")
            sf.write(paths[key], sig, SR, subtype="FLOAT")
        mix_path = str(tmp_path / f"mix_{i}.wav")
        sf.write(mix_path, speech + noise, SR, subtype="FLOAT")
        items[f"utt{i}.wav"] = {"mix": mix_path, "ref": paths, "sample_rate": SR, "num_samples": n,
                                "dataset_name": "synth"}
    manifest = tmp_path / "synth.json"
    manifest.write_text(json.dumps({"train": {}, "valid": {}, "test": items}, indent=4))
    fx = load_fixture("tuss")
    hp = copy.deepcopy(fx["hparams"])
    hp["dataset_conf"]["test"] = {"json_path_and_num_data": [[str(manifest), None]]}
    hp["css_datasets"] = []
    hp["num_workers"] = 0
    ckpt = write_published_layout(tmp_path / "exp", hp, fx["state_dict"], "epoch=1.ckpt")
    return ckpt, items


def test_eval_results_match_independent_metrics(experiment, capsys):
    ckpt, items = experiment
    assert eval_cli.main(["--ckpt_path", str(ckpt), "--device", "cpu"]) == 0
    exp = ckpt.parent.parent
    lines = (exp / "result.txt").read_text().splitlines()
    assert lines == sorted(lines) and all(": " in ln and len(ln.split(": ")[1].split(".")[1]) == 2 for ln in lines)
    results = json.loads((exp / "result.json").read_text())
    assert {ln.split(": ")[0] for ln in lines} == set(results)

    model = load_model(ckpt)
    per = {("speech", "snr"): [], ("speech", "sisnr"): [], ("sfxbg", "snr"): [], ("sfxbg", "sisnr"): []}
    item_snr = []
    with torch.no_grad():
        for item in items.values():
            refs = [sf.read(item["ref"][k], dtype="float32")[0] for k in ("speech_1", "sfxbg_1")]
            mix = torch.from_numpy(refs[0] + refs[1])[None]
            est = model(mix, [["speech", "sfxbg"]])[0].double().numpy()
            snrs = []
            for j, prompt in enumerate(["speech", "sfxbg"]):
                per[prompt, "snr"].append(_snr(est[j], refs[j]))
                per[prompt, "sisnr"].append(_si_snr(est[j], refs[j]))
                snrs.append(per[prompt, "snr"][-1])
            item_snr.append(np.mean(snrs))
    for (prompt, metric), values in per.items():
        assert results[f"synth_test/{prompt}/{metric}"] == pytest.approx(np.mean(values), abs=1e-3)
    assert results["test/snr"] == pytest.approx(np.mean(item_snr), abs=1e-3)  # one dataset: its mean
    assert f"test/snr: {results['test/snr']:.2f}" in lines
    assert "wrote" in capsys.readouterr().out

    # separated audio: index, id, prompt and SI-SNR in the name, at the item's length
    saved = sorted(p.name for p in (exp / "audio_outputs" / "synth").iterdir())
    assert len(saved) == 6
    first = next(name for name in saved if name.startswith("0000_utt0_speech0_sisnr"))
    value = float(first.split("sisnr")[1][:-4])
    assert value == pytest.approx(per["speech", "sisnr"][0], abs=0.01)
    data, sr = sf.read(str(exp / "audio_outputs" / "synth" / first))
    assert sr == SR and len(data) == items["utt0.wav"]["num_samples"]


def test_refuses_to_overwrite_and_single_prompt(experiment, capsys):
    ckpt, _ = experiment
    exp = ckpt.parent.parent
    assert eval_cli.main(["--ckpt_path", str(ckpt), "--no_audio"]) == 0
    before = (exp / "result.txt").read_text()
    capsys.readouterr()
    assert eval_cli.main(["--ckpt_path", str(ckpt), "--no_audio"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "result.txt exists; pass --overwrite" in err[0]
    assert (exp / "result.txt").read_text() == before
    assert eval_cli.main(["--ckpt_path", str(exp), "--single_prompt", "--no_audio"]) == 0  # directory: averaged
    assert (exp / "result_single.txt").is_file() and (exp / "result_single.json").is_file()
    assert not (exp / "audio_outputs").exists()
    assert eval_cli.main(["--ckpt_path", str(ckpt), "--no_audio", "--overwrite"]) == 0


def test_errors(tmp_path, capsys):
    assert eval_cli.main(["--ckpt_path", str(tmp_path / "missing.ckpt")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
    lone = tmp_path / "x" / "checkpoints" / "m.ckpt"
    lone.parent.mkdir(parents=True)
    torch.save({"state_dict": {}}, lone)
    assert eval_cli.main(["--ckpt_path", str(lone)]) == 1
    assert "no hparams.yaml for checkpoint" in capsys.readouterr().err

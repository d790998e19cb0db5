"""eval.py on a synthetic test manifest: result files against metrics computed here by hand, single-prompt grouping,
CSS override, checkpoint averaging, saved audio, refusals."""

import copy
import csv
import io
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import utils.atomic as atomic_mod
from datasets.synthetic import write_synthetic_corpus
from eval import main
from nets import load_model
from separation.css import css_forward
from tests.helpers import load_fixture, write_published_layout
from utils.audio import resample

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning's hints about workers and devices


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_synthetic_corpus(tmp_path_factory.mktemp("corpus"), files_per_prompt=1, num_mixtures=2)


def _hparams(corpus, segment=10.0):
    hp = copy.deepcopy(load_fixture("tuss")["hparams"])
    hp["dataset_conf"]["test"] = {"json_path_and_num_data": [[str(corpus["fixed"]), None],
                                                             [str(corpus["fixed_css"]), None, 1]]}
    hp["css_datasets"] = ["dnr"]
    hp["css_conf"].update(segment_size=segment, shift_size=segment)  # longer than every item: CSS = plain
    hp["num_workers"] = 0
    return hp


def _test_items(corpus):
    """(dataset, id, prompts, refs (s, n) float32, sample_rate) of the test mixtures, read here from the files."""
    for name, channel in (("fixed", 0), ("fixed_css", 1)):
        manifest = json.loads(Path(corpus[name]).read_text())
        for item_id, entry in manifest["test"].items():
            refs = np.stack([sf.read(p, dtype="float32", always_2d=True)[0][:, channel] for p in entry["ref"].values()])
            yield entry["dataset_name"], item_id, [k.split("_")[0] for k in entry["ref"]], refs, entry["sample_rate"]


def _expected(model, corpus, single=False, css=None):
    """Metrics computed independently of training.metrics / the Lightning module: numpy formulas, hand aggregation."""
    per_item, per_prompt = {}, {}
    for dataset, _, prompts, refs, sr in _test_items(corpus):
        x = resample(torch.from_numpy(refs.sum(0))[None], sr, 48000)
        with torch.inference_mode():
            if single:
                est = torch.cat([model(x, [[p]]) for p in prompts], dim=1)
            elif css and dataset == "dnr":
                est = css_forward(lambda s, p=prompts: model(s, [p] * s.shape[0]), x, round(css[0] * 48000),
                                  round(css[1] * 48000))
            else:
                est = model(x, [prompts])
        est = resample(est, 48000, sr)[0, :, : refs.shape[1]].double().numpy()
        ref = refs.astype(np.float64)
        rr, err = (ref**2).sum(-1), ((ref - est) ** 2).sum(-1)
        alpha = (est * ref).sum(-1) / rr
        m = {"snr": 10 * np.log10(rr / err),
             "sisnr": 10 * np.log10((alpha**2 * rr) / ((alpha[:, None] * ref - est) ** 2).sum(-1)),
             "loss": 10 * np.log10(err + 1e-3 * rr + 1e-7) - 10 * np.log10(rr + 1e-7)}
        mix = ref.sum(0)  # the baseline of the improvements: the mixture itself as every estimate
        mix_err = ((ref - mix) ** 2).sum(-1)
        beta = (mix * ref).sum(-1) / rr
        m["snri"] = m["snr"] - 10 * np.log10(rr / mix_err)
        m["sisnri"] = m["sisnr"] - 10 * np.log10((beta**2 * rr) / ((beta[:, None] * ref - mix) ** 2).sum(-1))
        per_item.setdefault(dataset, []).append({k: v.mean() for k, v in m.items()})
        for j, p in enumerate(prompts):
            per_prompt.setdefault((dataset, p), []).append({k: v[j] for k, v in m.items()})
    out = {}
    metrics = ("loss", "snr", "sisnr", "snri", "sisnri")
    for dataset, items in per_item.items():
        for k in metrics:
            out[f"{dataset}_test/{k}"] = float(np.mean([i[k] for i in items]))
    for (dataset, p), recs in per_prompt.items():
        for k in metrics:
            out[f"{dataset}_test/{p}/{k}"] = float(np.mean([r[k] for r in recs]))
    for k in metrics:
        out[f"test/{k}"] = float(np.mean([out[f"{d}_test/{k}"] for d in per_item]))
    return out


def _check(exp, expected, single=False):
    suffix = "_single" if single else ""
    got = json.loads((exp / f"result{suffix}.json").read_text())
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=2e-3), key
    lines = (exp / f"result{suffix}.txt").read_text().splitlines()
    assert lines == sorted(lines) and len(lines) == len(expected)
    for line in lines:
        key, value = line.split(": ")
        assert len(value.split(".")[1]) == 2 and abs(float(value) - expected[key]) <= 0.005 + 2e-3, line


def test_eval_results_match_hand_computed_metrics(tmp_path, corpus, capsys):
    fx = load_fixture("tuss")
    ckpt = write_published_layout(tmp_path / "exp" / "tiny", _hparams(corpus), fx["state_dict"], "epoch=3.ckpt")
    exp = tmp_path / "exp" / "tiny"  # two levels above the checkpoint
    model = load_model(ckpt)
    assert main(["--ckpt_path", str(ckpt), "--device", "cpu", "--quiet"]) == 0
    expected = _expected(model, corpus)
    _check(exp, expected)
    assert {"test/loss", "test/snr", "test/sisnr", "dnr_test/musicbg/sisnr", "vctk_demand_test/speech/snr"} <= set(
        expected)
    # separated audio: <dataset>/<index>_<prompt><j>_sisnr<value>.wav at the item's rate and length
    items = list(_test_items(corpus))
    dataset, _, prompts, refs, sr = items[2]  # the first dnr item
    files = sorted((exp / "audio_outputs" / "dnr").glob("0000_*.wav"))
    assert [f.name.split("_sisnr")[0] for f in files] == sorted(f"0000_{p}{j}" for j, p in enumerate(prompts))
    for f in files:
        info = sf.info(str(f))
        assert (info.samplerate, info.frames) == (sr, refs.shape[1])
    speech = next(f for f in files if "speech0" in f.name)
    sisnr = float(speech.stem.split("_sisnr")[1])
    assert sisnr == pytest.approx(_item_sisnr(model, refs, sr, prompts, 0), abs=0.006)
    assert "fixed_css_test_0" in (exp / "audio_outputs" / "dnr" / "items.tsv").read_text()

    # a second run refuses to overwrite, names the file, and changes nothing
    before = (exp / "result.txt").read_text()
    assert main(["--ckpt_path", str(ckpt), "--device", "cpu", "--quiet"]) == 2  # a usage error
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {exp / 'result.txt'} already exists; pass --overwrite to replace it"]
    assert (exp / "result.txt").read_text() == before

    # --overwrite with chunk-wise processing of the dnr items (0.5 s segments, 0.25 s shift)
    assert main(["--ckpt_path", str(ckpt), "--device", "cpu", "--quiet", "--overwrite", "--css_segment_size", "0.5",
                 "--no_audio"]) == 0
    css_expected = _expected(model, corpus, css=(0.5, 0.25))
    _check(exp, css_expected)
    assert css_expected["dnr_test/snr"] != pytest.approx(expected["dnr_test/snr"], abs=1e-3)
    assert css_expected["vctk_demand_test/snr"] == pytest.approx(expected["vctk_demand_test/snr"])
    assert not list(exp.glob(".audio_outputs*"))  # no staging folder left


def _item_sisnr(model, refs, sr, prompts, j):
    x = resample(torch.from_numpy(refs.sum(0))[None], sr, 48000)
    with torch.inference_mode():
        est = resample(model(x, [prompts]), 48000, sr)[0, j, : refs.shape[1]].double().numpy()
    r = refs[j].astype(np.float64)
    alpha = est @ r / (r @ r)
    return 10 * math.log10((alpha**2 * (r @ r)) / ((alpha * r - est) ** 2).sum())


def test_single_prompt_and_averaged_directory(tmp_path, corpus):
    fx = load_fixture("tuss")
    sd_a = fx["state_dict"]
    g = torch.Generator().manual_seed(0)
    sd_b = {k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in sd_a.items()}
    exp = tmp_path / "avg"
    write_published_layout(exp, _hparams(corpus), sd_a, "epoch=1.ckpt")
    write_published_layout(exp, _hparams(corpus), sd_b, "epoch=2.ckpt")
    write_published_layout(exp, _hparams(corpus), {k: v * 3 for k, v in sd_a.items()}, "last.ckpt")  # not averaged
    averaged = load_model(exp)
    for key, value in averaged.state_dict().items():
        published = "model." + key
        torch.testing.assert_close(value, (sd_a[published] + sd_b[published]) / 2)
    assert main(["--ckpt_path", str(exp), "--single_prompt", "--device", "cpu", "--quiet", "--no_audio"]) == 0
    _check(exp, _expected(averaged, corpus, single=True), single=True)
    assert not (exp / "result.txt").exists() and not (exp / "audio_outputs_single").exists()


def test_eval_errors(tmp_path, corpus, capsys):
    fx = load_fixture("tuss")

    def error(args):
        assert main([*args, "--device", "cpu", "--quiet", "--no_audio"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ")
        return err[0]

    assert "checkpoint not found" in error(["--ckpt_path", str(tmp_path / "nope.ckpt")])
    lone = tmp_path / "lone" / "checkpoints" / "x.ckpt"
    lone.parent.mkdir(parents=True)
    torch.save({"state_dict": fx["state_dict"]}, lone)
    assert "no hparams.yaml for checkpoint" in error(["--ckpt_path", str(lone)])
    hp = _hparams(corpus)
    hp["dataset_conf"]["test"] = {"json_path_and_num_data": [[str(tmp_path / "missing.json"), None]]}
    ckpt = write_published_layout(tmp_path / "nodata", hp, fx["state_dict"])
    assert "missing.json" in error(["--ckpt_path", str(ckpt)])
    assert not list((tmp_path / "nodata").glob("result*"))
    conv = load_fixture("conventional")
    hp = copy.deepcopy(conv["hparams"])
    hp["dataset_conf"]["test"] = _hparams(corpus)["dataset_conf"]["test"]
    ckpt = write_published_layout(tmp_path / "conv", hp, conv["state_dict"])
    assert "--single_prompt needs a TUSS model" in error(["--ckpt_path", str(ckpt), "--single_prompt"])
    state = copy.deepcopy(fx["state_dict"])
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key][...] = float("nan")  # NaN weights: refused before any result (not a result.txt of nan)
    ckpt = write_published_layout(tmp_path / "nan", _hparams(corpus), state)
    message = error(["--ckpt_path", str(ckpt)])
    assert "holds NaN or infinite weights in 1 tensor(s)" in message and key in message
    assert not list((tmp_path / "nan").glob("result*"))


def test_eval_bf16_precision_close_to_fp32(tmp_path, corpus):
    fx = load_fixture("tuss")
    exp32, exp16 = tmp_path / "fp32", tmp_path / "bf16"
    for exp in (exp32, exp16):
        write_published_layout(exp, _hparams(corpus), fx["state_dict"], "epoch=1.ckpt")
    assert main(["--ckpt_path", str(exp32), "--device", "cpu", "--quiet", "--no_audio"]) == 0
    assert main(["--ckpt_path", str(exp16), "--device", "cpu", "--quiet", "--no_audio", "--precision",
                 "bf16-mixed"]) == 0
    r32, r16 = (json.loads((e / "result.json").read_text()) for e in (exp32, exp16))
    assert set(r32) == set(r16)
    # bf16 autocast changes the network's arithmetic (so the numbers differ) but not the scoring (float32)
    assert r16["test/snr"] != r32["test/snr"]
    assert r16["test/snr"] == pytest.approx(r32["test/snr"], abs=0.5)
    with pytest.raises(SystemExit) as exc:
        main(["--ckpt_path", str(exp32), "--precision", "fp8"])
    assert exc.value.code == 2


def test_evaluate_without_writing_returns_the_same_metrics(tmp_path, corpus):
    from training.evaluate import evaluate

    fx = load_fixture("tuss")
    exp = tmp_path / "nowrite"
    write_published_layout(exp, _hparams(corpus), fx["state_dict"], "epoch=1.ckpt")
    metrics = evaluate(exp, device="cpu", progress=False, write=False)  # save_audio defaults to True: ignored
    assert sorted(p.name for p in exp.iterdir()) == ["checkpoints", "hparams.yaml"]  # nothing written
    assert main(["--ckpt_path", str(exp), "--device", "cpu", "--quiet", "--no_audio"]) == 0
    written = json.loads((exp / "result.json").read_text())
    assert written == pytest.approx(metrics)
    again = evaluate(exp, device="cpu", progress=False, write=False)  # an existing result does not stop it
    assert again == pytest.approx(metrics)


# --- option values, the experiment directory, write errors ------------------------------------------------

@pytest.fixture
def no_model_load(monkeypatch):
    import nets

    monkeypatch.setattr(nets, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))


def _error(args, capsys, code):
    assert main([*args, "--device", "cpu", "--quiet"]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(("args", "message"), [
    (["--css_segment_size", "0"], "--css_segment_size must be a finite number of seconds > 0, got 0"),
    (["--css_segment_size", "nan"], "--css_segment_size must be a finite number of seconds > 0, got nan"),
    (["--css_segment_size", "inf"], "--css_segment_size must be a finite number of seconds > 0, got inf"),
    (["--css_segment_size", "-1"], "--css_segment_size must be a finite number of seconds > 0, got -1"),
    (["--css_segment_size", "2", "--css_shift_size", "0"],
     "--css_shift_size must be a finite number of seconds > 0, got 0"),
    (["--css_segment_size", "2", "--css_shift_size", "3"], "--css_shift_size 3 must not exceed --css_segment_size 2"),
    (["--css_shift_size", "1"], "--css_shift_size 1 needs --css_segment_size"),
    (["--device", "gpu"], "--device gpu: "),
])
def test_bad_option_values_before_any_model(tmp_path, capsys, no_model_load, args, message):
    exp = tmp_path / "exp"
    write_published_layout(exp, load_fixture("tuss")["hparams"], {}, "epoch=1.ckpt")
    assert main(["--ckpt_path", str(exp), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert sorted(p.name for p in exp.iterdir()) == ["checkpoints", "hparams.yaml"]


def test_css_segment_below_one_window(tmp_path, corpus, capsys):
    exp = tmp_path / "exp"
    write_published_layout(exp, _hparams(corpus), load_fixture("tuss")["state_dict"], "epoch=1.ckpt")
    msg = _error(["--ckpt_path", str(exp), "--css_segment_size", "0.02"], capsys, 2)
    assert msg == ("error: --css_segment_size 0.02 s is shorter than this model's STFT window (2048 samples = "
                   "0.04267 s at 48000 Hz)")
    assert sorted(p.name for p in exp.iterdir()) == ["checkpoints", "hparams.yaml"]


@pytest.mark.parametrize(("clash", "kind"), [("result.txt", "dir"), ("result.json", "dir"),
                                             ("results_items.csv", "dir"), ("result.md", "dir"),
                                             ("result.png", "dir"), ("audio_outputs", "file")])
def test_result_path_clashes_before_any_model(tmp_path, capsys, no_model_load, clash, kind):
    exp = tmp_path / "exp"
    write_published_layout(exp, load_fixture("tuss")["hparams"], {}, "epoch=1.ckpt")
    (exp / clash).mkdir() if kind == "dir" else (exp / clash).write_text("mine")
    msg = _error(["--ckpt_path", str(exp), "--overwrite"], capsys, 2)
    expected = "is not a file; move it away to write the result" if kind == "dir" else \
        "is not a folder; move it away or pass --no_audio"
    assert msg == f"error: {exp / clash} exists and {expected}"
    assert (exp / clash).is_dir() == (kind == "dir")


def test_experiment_directory_not_writable(tmp_path, capsys, no_model_load, monkeypatch):
    """Tests run as root (chmod does not stop root): the probe is made to fail as in a read-only folder."""

    exp = tmp_path / "exp"
    write_published_layout(exp, load_fixture("tuss")["hparams"], {}, "epoch=1.ckpt")

    def mkdtemp(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(atomic_mod.tempfile, "mkdtemp", mkdtemp)
    assert _error(["--ckpt_path", str(exp)], capsys, 1) == f"error: cannot write {exp}: Permission denied"


def test_write_errors_keep_the_previous_result(tmp_path, corpus, capsys, monkeypatch):
    import errno

    import training.evaluate as evaluation

    exp = tmp_path / "exp"
    write_published_layout(exp, _hparams(corpus), load_fixture("tuss")["state_dict"], "epoch=1.ckpt")
    assert main(["--ckpt_path", str(exp), "--device", "cpu", "--quiet"]) == 0
    files = sorted(p for p in exp.rglob("*") if p.is_file() and "checkpoints" not in p.parts)
    before = {p: p.read_bytes() for p in files}
    assert exp / "result.txt" in before and any("audio_outputs" in p.parts for p in before)

    real_write = evaluation.write_audio
    calls = []

    def full_disk(path, *args, **kwargs):  # the 3rd saved file fails
        calls.append(Path(path))
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(evaluation, "write_audio", full_disk)
    msg = _error(["--ckpt_path", str(exp), "--overwrite", "--css_segment_size", "0.5"], capsys, 1)
    third = calls[2]
    assert msg == (f"error: cannot write {exp / 'audio_outputs' / third.parent.name / third.name}: "
                   "No space left on device")
    monkeypatch.setattr(evaluation, "write_audio", real_write)
    assert {p: p.read_bytes() for p in files} == before
    assert not [p for p in exp.iterdir() if p.name.startswith(".")]  # no staging or temporary file left

    real_replace = os.replace

    def refused(src, dst):  # the audio swap fails: the result files must not be replaced either
        if Path(dst) == exp / "audio_outputs" and not Path(src).parent.name.startswith("old-"):  # not the undo
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic_mod.os, "replace", refused)
    msg = _error(["--ckpt_path", str(exp), "--overwrite", "--css_segment_size", "0.5"], capsys, 1)
    assert msg == f"error: cannot write {exp / 'audio_outputs'}: Permission denied"
    monkeypatch.setattr(atomic_mod.os, "replace", real_replace)
    assert {p: p.read_bytes() for p in files} == before
    assert not [p for p in exp.iterdir() if p.name.startswith(".")]


def test_unreadable_test_mixtures_are_counted_named_and_the_exit_status_says_so(tmp_path, capsys):
    """2 of 3 mixtures readable: the results are the 2 scored, test/skipped is 1, result.md names the third, exit 1;
    --strict stops before writing anything (exit 2). A missing reference file is counted the same way."""
    corpus = write_synthetic_corpus(tmp_path / "corpus", files_per_prompt=1, num_mixtures=3)
    manifest = json.loads(Path(corpus["fixed"]).read_text())
    bad_id, bad = next(iter(manifest["test"].items()))
    Path(next(iter(bad["ref"].values()))).write_bytes(b"not audio at all")  # unreadable when loaded
    hp = _hparams(corpus)
    hp["dataset_conf"]["test"] = {"json_path_and_num_data": [[str(corpus["fixed"]), None]]}
    ckpt = write_published_layout(tmp_path / "exp", hp, load_fixture("tuss")["state_dict"])
    exp = tmp_path / "exp"
    args = ["--ckpt_path", str(ckpt), "--device", "cpu", "--quiet", "--no_audio"]
    assert main([*args, "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: 1 test mixture(s) could not be read, first: fixed " + bad_id)
    assert not list(exp.glob("result*"))  # --strict: nothing written
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: 1 test mixture(s) could not be read and were not scored (listed in result.md)")
    result = json.loads((exp / "result.json").read_text())
    assert result["test/skipped"] == 1.0
    rows = list(csv.DictReader(io.StringIO((exp / "results_items.csv").read_text())))
    assert {r["id"] for r in rows} == set(manifest["test"]) - {bad_id}  # the two readable ones, scored
    assert f"- fixed {bad_id} (" in (exp / "result.md").read_text()

    gone = tmp_path / "gone"  # a missing reference file: left out at load time, counted the same way
    shutil.copytree(exp, gone, ignore=shutil.ignore_patterns("result*", "results*"))
    Path(next(iter(bad["ref"].values()))).unlink()
    assert main(["--ckpt_path", str(gone / "checkpoints" / "model.pth"), "--device", "cpu", "--quiet",
                 "--no_audio"]) == 1
    assert json.loads((gone / "result.json").read_text())["test/skipped"] == 1.0
    assert "missing reference file" in (gone / "result.md").read_text()

"""eval.py --metrics: PESQ/ESTOI against their packages, SDR against museval, the MDX utterance SDR, the FUSS
one-source convention, the per-item CSV, the Markdown table and the figure, the default result unchanged, refusals."""

import copy
import csv
import importlib
import importlib.util
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.manifest import mixture_entry, write_manifest
from datasets.synthetic import write_synthetic_corpus
from eval import main
from tests.helpers import load_fixture, write_published_layout, write_wav
from training.evaluate import main_metric, result_figure
from training.metrics import (
    DEFAULT_EVAL_METRICS,
    MetricError,
    aggregate_records,
    bss_sdr,
    estoi,
    extra_scores,
    pesq_wb,
    score,
    si_snr,
    usdr,
)
from utils.audio import resample

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning's hints about workers and devices


def speech_like(sr: int, seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """A clean 'utterance': harmonics plus noise under a 4 Hz syllable envelope with pauses, float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(sr * seconds)) / sr
    env = 0.5 * (1 - np.cos(2 * np.pi * 4 * t)) * (np.sin(2 * np.pi * 0.5 * t) > -0.3)
    carrier = sum(np.sin(2 * np.pi * f * t) for f in (150, 300, 450, 900, 1800)) / 5 + 0.3 * rng.standard_normal(t.size)
    return (0.3 * env * carrier).astype(np.float32)


def noisy(x: np.ndarray, level: float, seed: int = 1) -> np.ndarray:
    return (x + level * np.random.default_rng(seed).standard_normal(x.size)).astype(np.float32)


def at_16k(x: np.ndarray, sr: int) -> np.ndarray:
    """What pesq_wb documents: float64, utils.audio.resample to 16 kHz."""
    return resample(torch.from_numpy(x.astype(np.float64)), sr, 16000).numpy()


# --- PESQ and ESTOI: exactly the packages' values -------------------------------------------------------------------

@pytest.mark.parametrize("sr", [16000, 44100, 48000])
def test_pesq_is_the_packages_wideband_score_at_16k(sr):
    pesq = pytest.importorskip("pesq")
    ref = speech_like(sr)
    for level in (0.01, 0.05):
        deg = noisy(ref, level)
        ours = pesq_wb(torch.from_numpy(deg), torch.from_numpy(ref), sr)
        assert ours == pesq.pesq(16000, at_16k(ref, sr), at_16k(deg, sr), "wb")
        assert 1.0 < ours < 4.65
    clean = pesq_wb(ref, ref, sr)
    assert clean > pesq_wb(noisy(ref, 0.01), ref, sr) > pesq_wb(noisy(ref, 0.05), ref, sr)
    assert math.isnan(pesq_wb(np.zeros(sr), np.zeros(sr), sr))  # no utterance: no score, NaN


@pytest.mark.parametrize("sr", [16000, 48000])
def test_estoi_is_pystoi_extended_at_the_signal_rate(sr):
    pystoi = pytest.importorskip("pystoi")
    ref = speech_like(sr)
    deg = noisy(ref, 0.05)
    ours = estoi(torch.from_numpy(deg), torch.from_numpy(ref), sr)
    # the package's own value to the last bits: pystoi's numpy sums differ in the last ulp with the arrays' memory
    # alignment (the same call on two copies of the same data can differ by 1e-16)
    assert ours == pytest.approx(pystoi.stoi(ref.astype(np.float64), deg.astype(np.float64), sr, extended=True),
                                 rel=1e-12, abs=0)
    assert ours != pystoi.stoi(ref.astype(np.float64), deg.astype(np.float64), sr, extended=False)  # not plain STOI
    assert estoi(ref, ref, sr) > ours > estoi(noisy(ref, 0.2), ref, sr)


def test_speech_metrics_refuse_other_prompts():
    ref = torch.from_numpy(speech_like(16000, 1.0))
    for fn, name in ((pesq_wb, "pesq"), (estoi, "estoi")):
        with pytest.raises(MetricError, match=f"^{name} is computed only for speech outputs, not for 'drums'$"):
            fn(ref, ref, 16000, prompt="drums")
    est = torch.stack([ref, ref.flip(0), 0.5 * ref])
    out = extra_scores(est, torch.stack([ref, ref, ref]), 16000, ["drums", "sfx", "speech"], ["pesq", "estoi"])
    assert out[0] == {} and out[1] == {}  # not computed for drums / sfx
    assert set(out[2]) == {"pesq", "estoi"} and out[2]["pesq"] == pesq_wb(0.5 * ref, ref, 16000)
    music = extra_scores(est, torch.stack([ref, ref, ref]), 16000, ["drums", "sfx", "speech"], ["sdr", "usdr"])
    assert [set(d) for d in music] == [{"sdr", "usdr"}, set(), set()]
    with pytest.raises(MetricError, match="unknown metric 'si-sdr'"):
        extra_scores(est, est, 16000, ["speech"] * 3, ["si-sdr"])


# --- SDR: museval's BSS Eval v4 -------------------------------------------------------------------------------------

def museval_metrics():
    """museval's BSS Eval module on its own: the package's __init__ imports musdb and stempeg, which need ffmpeg on
    the PATH (not installed by run_tests.sh); museval/metrics.py itself imports only numpy and scipy."""
    spec = importlib.util.find_spec("museval")
    if spec is None:
        pytest.skip("museval is not installed (pip install museval): the SDR reference")
    loader = importlib.util.spec_from_file_location("museval_metrics", Path(spec.origin).parent / "metrics.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def museval_sdr(refs: np.ndarray, est: np.ndarray, sr: int) -> np.ndarray:
    """museval.evaluate's v4 call (1 s window and hop, one set of filters), median over frames as museval's
    TrackStore aggregates them (nanmedian)."""
    sdr, _, _, _, _ = museval_metrics().bss_eval(refs[..., None], est[..., None], window=sr, hop=sr,
                                                 compute_permutation=False, filters_len=512,
                                                 framewise_filters=False, bsseval_sources_version=False)
    return np.nanmedian(sdr, axis=1), sdr


def test_sdr_matches_museval_on_random_stems():
    rng = np.random.default_rng(0)
    sr, n = 8000, int(3.6 * 8000)  # 3 frames, a trailing 0.6 s that museval drops
    refs = rng.standard_normal((4, n))
    est = 0.8 * refs + 0.3 * rng.standard_normal((4, n)) + 0.2 * refs[[1, 2, 3, 0]]
    ours = bss_sdr(torch.from_numpy(est), torch.from_numpy(refs), sr)
    reference, frames = museval_sdr(refs, est, sr)
    assert frames.shape == (4, 3)
    np.testing.assert_allclose(ours, reference, atol=0.01)
    # the median over frames, not the SNR of the whole signal
    whole = 10 * np.log10((refs**2).sum(-1) / ((refs - est) ** 2).sum(-1))
    assert np.abs(ours - whole).max() > 0.01


def test_sdr_matches_museval_on_sinusoidal_stems_with_a_silent_frame():
    sr, n = 8000, 4 * 8000
    t = np.arange(n) / sr
    refs = np.stack([0.5 * np.sin(2 * np.pi * f * t + p) for f, p in ((55, 0.0), (220, 1.0), (440, 2.0), (1000, 0.3))])
    refs[1] *= 1 + 0.5 * np.sin(2 * np.pi * 0.3 * t)  # a varying level: the frames differ
    refs[3, sr : 2 * sr] = 0.0  # a silent second of one stem: that frame is NaN for all stems (museval's rule)
    delayed = np.roll(refs, 3, axis=1)  # a 3-sample delay: within the distortion filter's 512 taps
    est = 0.7 * refs + 0.2 * delayed + 0.05 * refs[[3, 0, 1, 2]]
    ours = bss_sdr(est, refs, sr)
    reference, frames = museval_sdr(refs, est, sr)
    assert np.isnan(frames[:, 1]).all() and not np.isnan(frames[:, [0, 2, 3]]).any()
    np.testing.assert_allclose(ours, reference, atol=0.01)
    short = bss_sdr(est[:, : sr // 2], refs[:, : sr // 2], sr)  # shorter than a window: the whole signal
    np.testing.assert_allclose(short, museval_sdr(refs[:, : sr // 2], est[:, : sr // 2], sr)[0], atol=0.01)
    assert np.isnan(bss_sdr(est, np.zeros_like(refs), sr)).all()  # every frame silent: NaN


def test_usdr_is_the_mdx_definition():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((2, 5000))
    est = ref + 0.1 * rng.standard_normal((2, 5000))
    expected = 10 * np.log10(((ref**2).sum(-1) + 1e-7) / (((ref - est) ** 2).sum(-1) + 1e-7))  # Demucs' new_sdr
    np.testing.assert_allclose(usdr(torch.from_numpy(est), torch.from_numpy(ref)).numpy(), expected, rtol=1e-6)
    silent = usdr(torch.zeros(1, 100), torch.zeros(1, 100))  # 0/0 guarded by the delta: 0 dB
    assert float(silent) == pytest.approx(0.0)


# --- FUSS: one-source items by absolute SI-SNR ----------------------------------------------------------------------

def test_fuss_single_source_items_report_absolute_si_snr():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(1, 4000, generator=g)
    est = ref + 0.3 * torch.randn(1, 4000, generator=g)
    plain = score(est, ref, ref[0])
    fuss = score(est, ref, ref[0], absolute_single=True)
    # the mixture is the reference: its SI-SNR is the 70 dB clamp, so the "improvement" is SI-SNR - 70
    assert float(plain["sisnri"]) == pytest.approx(float(plain["sisnr"]) - 70.0, abs=1e-4)
    assert float(fuss["sisnri"]) == float(fuss["sisnr"]) == float(plain["sisnr"])
    assert float(fuss["snri"]) == float(fuss["snr"])
    two = torch.randn(2, 4000, generator=g)  # two sources: the improvement, FUSS or not
    est2 = two + 0.3 * torch.randn(2, 4000, generator=g)
    for key, value in score(est2, two, two.sum(0), absolute_single=True).items():
        torch.testing.assert_close(value, score(est2, two, two.sum(0))[key])


# --- eval.py end to end --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_synthetic_corpus(tmp_path_factory.mktemp("corpus"), files_per_prompt=1, num_mixtures=2)


def _hparams(specs):
    hp = copy.deepcopy(load_fixture("tuss")["hparams"])
    hp["dataset_conf"]["test"] = {"json_path_and_num_data": specs}
    hp["css_datasets"] = []
    hp["num_workers"] = 0
    return hp


def _exp(tmp_path, corpus, name="exp"):
    specs = [[str(corpus["fixed"]), None], [str(corpus["fixed_css"]), None, 1]]
    write_published_layout(tmp_path / name, _hparams(specs), load_fixture("tuss")["state_dict"], "epoch=1.ckpt")
    return tmp_path / name


def _run(exp, *args):
    return main(["--ckpt_path", str(exp), "--device", "cpu", "--quiet", "--no_audio", "--overwrite", *args])


def _png_size(path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


ALL = ["snr", "sisnr", "pesq", "estoi", "sdr", "usdr"]


def test_items_csv_markdown_and_figure(tmp_path, corpus):
    exp = _exp(tmp_path, corpus)
    assert _run(exp, "--metrics", *ALL) == 0
    result = json.loads((exp / "result.json").read_text())
    rows = list(csv.DictReader((exp / "results_items.csv").open()))
    columns = ["dataset", "manifest", "channel", "id", "prompt", "loss", "snr", "snri", "sisnr", "sisnri", "pesq",
               "estoi", "sdr", "usdr"]
    assert list(rows[0]) == columns
    assert len(rows) == 2 * 2 + 2 * 3  # vctk_demand: 2 items x speech, sfxbg; dnr: 2 items x speech, sfxbg, musicbg
    assert {(r["dataset"], r["channel"]) for r in rows} == {("vctk_demand", "0"), ("dnr", "1")}
    for r in rows:  # each metric only where it fits the prompt
        assert (r["pesq"] != "") == (r["estoi"] != "") == (r["prompt"] == "speech"), r
        assert (r["sdr"] != "") == (r["usdr"] != "") == (r["prompt"] == "musicbg"), r
        assert all(r[k] != "" for k in ("loss", "snr", "snri", "sisnr", "sisnri"))
    # the per-item values reproduce the aggregated ones: means, and the median over items for sdr
    for dataset, prompt in (("dnr", "speech"), ("vctk_demand", "speech"), ("vctk_demand", "sfxbg")):
        sel = [r for r in rows if r["dataset"] == dataset and r["prompt"] == prompt]
        for key in ("sisnri", "snr", "pesq", "estoi") if prompt == "speech" else ("sisnri", "snr"):
            values = [float(r[key]) for r in sel]
            assert len(values) == 2 and not np.isnan(values).any(), (dataset, prompt, key)
            assert result[f"{dataset}_test/{prompt}/{key}"] == pytest.approx(np.mean(values))
    sdrs = [float(r["sdr"]) for r in rows if r["prompt"] == "musicbg"]
    assert result["dnr_test/musicbg/sdr"] == pytest.approx(float(np.median(sdrs)))
    assert result["dnr_test/sdr"] == pytest.approx(float(np.median(sdrs)))  # one music output per item
    assert result["test/sdr"] == result["dnr_test/sdr"]  # the only dataset with music outputs
    assert "vctk_demand_test/sdr" not in result and "dnr_test/sfxbg/pesq" not in result
    usdrs = [float(r["usdr"]) for r in rows if r["prompt"] == "musicbg"]
    assert result["dnr_test/musicbg/usdr"] == pytest.approx(float(np.mean(usdrs)))
    # usdr: plain SNR over the whole item, with the MDX delta (here the same to 1e-4 dB)
    for r in rows:
        if r["usdr"]:
            assert float(r["usdr"]) == pytest.approx(float(r["snr"]), abs=1e-4)

    md = (exp / "result.md").read_text().splitlines()
    assert md[0] == "| dataset | prompt | snr | snri | sisnr | sisnri | pesq | estoi | sdr | usdr |"
    table = {tuple(line.split(" | ")[:2]): line for line in md[2:] if line.startswith("| ")}
    assert [k[0] for k in table] == ["| dnr"] * 4 + ["| vctk_demand"] * 3 + ["| all"]
    cells = table[("| dnr", "musicbg")].strip("| ").split(" | ")
    assert cells[2:] == [f"{result[f'dnr_test/musicbg/{k}']:.2f}" if k not in ("pesq", "estoi") else "-"
                         for k in columns[6:]]
    overall = table[("| all", "all")].strip("| ").split(" | ")
    assert overall[5] == f"{result['test/sisnri']:.2f}"
    assert "sdr: medians over items instead of means" in md[-1]

    width, height = _png_size(exp / "result.png")
    assert width >= 600 and height == 400
    fig, groups = result_figure(result, main_metric(ALL))
    assert [d for d, _ in groups] == ["dnr", "vctk_demand"]  # one bar group per dataset
    assert groups[0][1] == ["musicbg", "sfxbg", "speech"]
    assert len(fig.axes[0].patches) == 5  # one bar per prompt of each dataset
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["dnr", "vctk_demand"]
    sdr_fig, sdr_groups = result_figure(result, "sdr")  # a metric of one prompt: only the datasets that have it
    assert sdr_groups == [("dnr", ["musicbg"])] and len(sdr_fig.axes[0].patches) == 1


def test_default_metrics_leave_the_result_unchanged(tmp_path, corpus):
    exp = _exp(tmp_path, corpus)
    assert _run(exp) == 0  # no --metrics
    txt, js = (exp / "result.txt").read_text(), (exp / "result.json").read_text()
    csv_default = (exp / "results_items.csv").read_text()
    assert csv_default.splitlines()[0] == "dataset,manifest,channel,id,prompt,loss,snr,snri,sisnr,sisnri"
    assert _run(exp, "--metrics", *DEFAULT_EVAL_METRICS) == 0
    assert (exp / "result.txt").read_text() == txt and (exp / "result.json").read_text() == js
    assert (exp / "results_items.csv").read_text() == csv_default
    # more metrics: the default keys keep their values; only the new metrics' keys are added
    assert _run(exp, "--metrics", "snr", "sisnr", "pesq", "sdr") == 0
    lines = set((exp / "result.txt").read_text().splitlines())
    assert set(txt.splitlines()) <= lines
    assert {line.split(":")[0].rsplit("/", 1)[1] for line in lines - set(txt.splitlines())} == {"pesq", "sdr"}
    # fewer: loss and the requested metric's keys only
    assert _run(exp, "--metrics", "sisnr") == 0
    keys = {line.split(":")[0].rsplit("/", 1)[1] for line in (exp / "result.txt").read_text().splitlines()}
    assert keys == {"loss", "sisnr", "sisnri"}
    assert set((exp / "result.txt").read_text().splitlines()) <= set(txt.splitlines())


def test_fuss_items_in_an_evaluation(tmp_path):
    """A FUSS test set with 1- and 2-source items, and the same 1-source item in a non-FUSS set."""
    sr, n = 16000, 12000
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(n).astype(np.float32) * 0.1 for _ in range(2))
    paths = {name: write_wav(tmp_path / f"{name}.wav", x, sr, subtype="FLOAT") for name, x in (("a", a), ("b", b))}
    manifests = []
    for dataset in ("fuss", "uss"):
        entries = {"one": mixture_entry({"sfx_1": paths["a"]}, sr, n, dataset),
                   "two": mixture_entry({"sfx_1": paths["a"], "sfx_2": paths["b"]}, sr, n, dataset)}
        manifests.append(write_manifest(tmp_path / f"{dataset}.json", {"train": {}, "valid": {}, "test": entries}))
    exp = tmp_path / "exp"
    write_published_layout(exp, _hparams([[str(m), None] for m in manifests]), load_fixture("tuss")["state_dict"],
                           "epoch=1.ckpt")
    assert _run(exp) == 0
    rows = {(r["dataset"], r["id"], i): r for i, r in enumerate(csv.DictReader((exp / "results_items.csv").open()))}
    by = {(d, item): [r for (dd, ii, _), r in rows.items() if (dd, ii) == (d, item)] for d, item, _ in rows}
    (fuss_one,), (uss_one,) = by[("fuss", "one")], by[("uss", "one")]
    assert float(fuss_one["sisnri"]) == float(fuss_one["sisnr"]) and float(fuss_one["snri"]) == float(fuss_one["snr"])
    assert float(uss_one["sisnr"]) == float(fuss_one["sisnr"])  # the same audio, the same separation
    mix_sisnr = float(si_snr(torch.from_numpy(a)[None], torch.from_numpy(a)[None]))  # the clamp, 70 dB
    assert float(uss_one["sisnri"]) == pytest.approx(float(uss_one["sisnr"]) - mix_sisnr, abs=1e-3)
    for fuss, uss in zip(by[("fuss", "two")], by[("uss", "two")], strict=True):  # two sources: improvements
        assert fuss["sisnri"] == uss["sisnri"] and float(fuss["sisnri"]) != float(fuss["sisnr"])
    result = json.loads((exp / "result.json").read_text())
    two = np.mean([float(r["sisnri"]) for r in by[("fuss", "two")]])
    assert result["fuss_test/sisnri"] == pytest.approx((float(fuss_one["sisnr"]) + two) / 2)


# --- refusals and atomicity ----------------------------------------------------------------------------------------

@pytest.fixture
def no_model_load(monkeypatch):
    import nets

    monkeypatch.setattr(nets, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_unknown_metric_is_a_usage_error(tmp_path, capsys, no_model_load):
    exp = tmp_path / "exp"
    write_published_layout(exp, load_fixture("tuss")["hparams"], {}, "epoch=1.ckpt")
    assert main(["--ckpt_path", str(exp), "--quiet", "--metrics", "snr", "bogus"]) == 2
    assert _one_line_error(capsys) == ("error: --metrics: unknown metric 'bogus'; choose from snr, sisnr, pesq, estoi, "
                                       "sdr, usdr")
    assert sorted(p.name for p in exp.iterdir()) == ["checkpoints", "hparams.yaml"]


def test_missing_metric_package_names_the_pip_command(tmp_path, capsys, no_model_load, monkeypatch):
    exp = tmp_path / "exp"
    write_published_layout(exp, load_fixture("tuss")["hparams"], {}, "epoch=1.ckpt")
    real = importlib.import_module

    def broken(name, *args, **kwargs):
        if name == "pesq":
            raise ImportError("No module named 'pesq'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", broken)
    assert main(["--ckpt_path", str(exp), "--quiet", "--metrics", "sisnr", "pesq"]) == 2
    assert _one_line_error(capsys) == ("error: --metrics pesq needs the pesq package, which cannot be imported "
                                       "(ImportError); install it with: pip install pesq")


def test_a_failing_figure_keeps_the_previous_result(tmp_path, corpus, capsys, monkeypatch):
    import errno

    import training.evaluate as evaluation

    exp = _exp(tmp_path, corpus)
    assert _run(exp) == 0
    files = ("result.txt", "result.json", "results_items.csv", "result.md", "result.png")
    before = {f: (exp / f).read_bytes() for f in files}

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(evaluation, "result_figure", full_disk)
    assert _run(exp, "--metrics", "snr", "sisnr", "sdr") == 1
    assert _one_line_error(capsys) == f"error: cannot write {exp / 'result.png'}: No space left on device"
    assert {f: (exp / f).read_bytes() for f in files} == before
    assert not [p for p in exp.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_aggregate_extra_metrics_over_the_outputs_that_have_them():
    def rec(item, prompt, **extra):
        return {"dataset": "m", "id": item, "prompt": prompt, "loss": -1.0, "snr": 1.0, "sisnr": 1.0, "snri": 1.0,
                "sisnri": 1.0, **extra}

    records = [rec("a", "bass", sdr=1.0, usdr=2.0), rec("a", "drums", sdr=3.0, usdr=4.0), rec("a", "speech", pesq=2.0),
               rec("b", "bass", sdr=10.0, usdr=6.0), rec("b", "drums", sdr=float("nan"), usdr=8.0),
               rec("b", "speech", pesq=float("nan")),
               rec("c", "bass", sdr=0.0, usdr=0.0), rec("c", "drums", sdr=2.0, usdr=0.0), rec("c", "speech", pesq=3.0)]
    out = aggregate_records(records, "test")
    assert out["m_test/bass/sdr"] == 1.0  # median over items of 1, 10, 0
    assert out["m_test/drums/sdr"] == 2.5  # median of 3, 2 (NaN skipped)
    assert out["m_test/sdr"] == 2.0  # median over items of the item means 2, 10, 1
    assert out["m_test/usdr"] == pytest.approx((3.0 + 7.0 + 0.0) / 3)  # means for everything else
    assert out["m_test/speech/pesq"] == 2.5 and out["m_test/pesq"] == 2.5  # NaN (no PESQ score) skipped
    assert "m_test/bass/pesq" not in out and "m_test/speech/sdr" not in out
    assert out["test/sdr"] == 2.0 and out["test/loss"] == -1.0

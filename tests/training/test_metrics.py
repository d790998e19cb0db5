"""SNR / SI-SNR values by hand and the per-dataset, per-prompt aggregation."""

import math

import pytest
import torch

from training.metrics import aggregate_records, match, score, si_snr, snr


def test_snr_hand_value():
    assert float(snr(torch.tensor([3.0, 3.0]), torch.tensor([3.0, 4.0]))) == pytest.approx(10 * math.log10(25))
    out = snr(torch.zeros(2, 3, 10), torch.ones(2, 3, 10))
    assert out.shape == (2, 3) and torch.allclose(out, torch.zeros(2, 3), atol=1e-6)


def test_si_snr_hand_values_and_clamp():
    ref = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    est = torch.tensor([[2.0, 2.0, 1.0, -1.0], [0.0, 0.0, -3.0, 0.0]])
    out = si_snr(est, ref)
    assert out.shape == (2,)
    assert float(out[0]) == pytest.approx(10 * math.log10(8 / 2), abs=1e-4)  # scale 2, orthogonal energy 2
    assert float(out[1]) == pytest.approx(70.0)  # a scaled (even negated) copy: clamped at 70 dB
    silent = si_snr(torch.ones(1, 4), torch.zeros(1, 4))
    assert float(silent) == pytest.approx(-70.0)


def rec(dataset, item, prompt, loss, snr_, sisnr):
    return {"dataset": dataset, "id": item, "prompt": prompt, "loss": loss, "snr": snr_, "sisnr": sisnr}


def test_aggregate_records():
    records = [
        rec("wham", "a", "speech", -10, 10, 9), rec("wham", "a", "speech", -14, 14, 13),
        rec("wham", "a", "sfxbg", -4, 4, 3),
        rec("wham", "b", "speech", -20, 20, 19), rec("wham", "b", "speech", -20, 20, 19),
        rec("wham", "b", "sfxbg", -8, 8, 7),
        rec("fuss", "x", "sfx", -6, 6, 5), rec("fuss", "x", "sfx", -2, 2, 1),
    ]
    out = aggregate_records(records, "test")
    wham_items = [(-10 - 14 - 4) / 3, (-20 - 20 - 8) / 3]
    assert out["wham_test/loss"] == pytest.approx(sum(wham_items) / 2)
    assert out["wham_test/speech/snr"] == pytest.approx((10 + 14 + 20 + 20) / 4)
    assert out["wham_test/sfxbg/sisnr"] == pytest.approx(5.0)
    assert out["fuss_test/sfx/loss"] == pytest.approx(-4.0)
    assert out["test/loss"] == pytest.approx((sum(wham_items) / 2 + -4.0) / 2)  # mean of dataset means
    assert out["test/snr"] == pytest.approx((-sum(wham_items) / 2 + 4.0) / 2)
    assert set(out) >= {"test/sisnr", "fuss_test/snr", "wham_test/sfxbg/loss"}
    # the same id in two manifests (e.g. both MUSDB channels) counts as two items
    two = aggregate_records([{**rec("m", "s", "bass", 1, 1, 1), "channel": 0},
                             {**rec("m", "s", "bass", 3, 3, 3), "channel": 1}], "val")
    assert two["val/loss"] == pytest.approx(2.0)


def test_aggregate_records_improvements_and_missing_metrics():
    def item(i, snri, sisnri):
        return {**rec("demo", i, "speech", -1, 1, 1), "snri": snri, "sisnri": sisnri}

    out = aggregate_records([item("a", 4.0, 3.0), item("b", 6.0, 1.0)], "test")
    assert out["test/snri"] == pytest.approx(5.0) and out["demo_test/speech/sisnri"] == pytest.approx(2.0)
    # a metric that some record lacks (records from before the improvements existed) is left out, not an error
    mixed = aggregate_records([item("a", 4.0, 3.0), rec("demo", "b", "speech", -1, 1, 1)], "test")
    assert "test/snri" not in mixed and "demo_test/speech/sisnri" not in mixed
    assert mixed["test/snr"] == pytest.approx(1.0)


def test_improvements_are_relative_to_the_mixture():
    n = 16000
    t = torch.arange(n) / 16000
    refs = torch.stack([torch.sin(2 * math.pi * 440 * t), 0.5 * torch.sin(2 * math.pi * 97 * t)])
    mix = refs.sum(0)
    scores = score(mix.expand_as(refs).clone(), refs, mix)
    d_snr, d_sisnr = scores["snri"], scores["sisnri"]  # the mixture itself: no improvement
    assert torch.allclose(d_snr, torch.zeros(2), atol=1e-4) and torch.allclose(d_sisnr, torch.zeros(2), atol=1e-4)
    est = refs + 0.01 * refs.flip(0)  # 1% leakage
    d_snr = score(est, refs, mix)["snri"]
    # SNR(mix, ref0) = 10 log10(1 / 0.25) = 6.02 dB; SNR(est, ref0) = 10 log10(1 / 0.25e-4) = 46.02 dB
    assert d_snr[0].item() == pytest.approx(40.0, abs=0.05)
    # SNR(mix, ref1) = 10 log10(0.25 / 1) = -6.02 dB; SNR(est, ref1) = 10 log10(0.25 / 1e-4) = 33.98 dB
    assert d_snr[1].item() == pytest.approx(40.0, abs=0.05)


def test_match_swaps_only_equal_prompts_and_uses_all_outputs_without_prompts():
    g = torch.Generator().manual_seed(0)
    refs = torch.randn(3, 800, generator=g)
    swapped = refs[[1, 0, 2]]
    assert torch.equal(match(swapped, refs, ["sfx", "sfx", "speech"]), refs)
    assert torch.equal(match(swapped, refs, ["sfx", "speech", "sfxbg"]), swapped)  # different prompts: kept
    four = torch.cat([torch.zeros(1, 800), refs[[2, 0, 1]]])  # conventional: 4 outputs, one spare
    assert torch.equal(match(four, refs, None), refs)

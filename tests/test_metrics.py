"""SNR / SI-SNR values by hand and the per-dataset, per-prompt aggregation."""

import math

import pytest
import torch

from utils.metrics import aggregate_records, si_snr, snr


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


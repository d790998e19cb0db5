"""Losses against hand-computed values; permutation only within same-prompt groups (TUSS) or over all (PIT)."""

import itertools
import math

import pytest
import torch

from training.losses import NegSISNR, NegSNR, PITLoss, SNRWithZeroRefs, build_loss, prompt_groups

EPS = 1e-7


def db(x):
    return 10 * math.log10(x)


def test_snr_with_zero_refs_hand_values():
    loss = SNRWithZeroRefs(snr_max=30, zero_ref_loss_weight=0.1, eps=EPS)
    ref = torch.tensor([[[3.0, 4.0], [0.0, 0.0]]])  # |r1|^2 = 25, r2 silent
    est = torch.tensor([[[3.0, 3.0], [1.0, 2.0]]])  # |e1 - r1|^2 = 1, |e2|^2 = 5
    mix = ref.sum(1, keepdim=True).expand_as(ref)  # group mixture: |m|^2 = 25
    out = loss(est, ref, mix)
    active = db(1 + 1e-3 * 25 + EPS) - db(25 + EPS)  # -13.872 dB
    silent = 0.1 * db(5 + 1e-3 * 25 + EPS)  # 0.701
    torch.testing.assert_close(out, torch.tensor([[active, silent]]), rtol=1e-6, atol=1e-5)
    assert abs(active - (-13.8722)) < 1e-3 and abs(silent - 0.70114) < 1e-4
    # a perfect estimate is capped at snr_max
    perfect = loss(ref[:, :1], ref[:, :1], mix[:, :1])
    assert abs(float(perfect) - (db(1e-3 * 25 + EPS) - db(25 + EPS))) < 1e-5
    assert abs(float(perfect) + 30) < 1e-4


def test_same_prompt_swap_is_solved_and_different_prompts_never_swap():
    torch.manual_seed(0)
    ref = torch.randn(1, 3, 200)
    pit = PITLoss(SNRWithZeroRefs())
    groups = prompt_groups([["speech", "speech", "sfx"]])
    assert groups.tolist() == [[0, 0, 1]]
    swapped = ref[:, [1, 0, 2]]
    res = pit(swapped, ref, groups)
    assert res.perm.tolist() == [[1, 0, 2]]
    torch.testing.assert_close(res.est, ref)
    assert abs(float(res.loss) + 30) < 1e-3  # every output perfect: -30 dB (snr_max)
    # speech and sfx exchanged: not allowed, the loss stays that of the wrong order
    crossed = ref[:, [2, 1, 0]]
    res = pit(crossed, ref, prompt_groups([["speech", "sfx", "vocals"]]))
    assert res.perm.tolist() == [[0, 1, 2]]
    mix = ref  # each reference is its own group
    expected = SNRWithZeroRefs()(crossed, ref, mix).mean()
    torch.testing.assert_close(res.loss, expected)
    # with PIT over all outputs the same swap is undone
    res = pit(crossed, ref)
    assert res.perm.tolist() == [[2, 1, 0]] and abs(float(res.loss) + 30) < 1e-3


def test_zero_reference_uses_its_group_mixture():
    ref = torch.tensor([[[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]]])  # speech, silent speech, sfx
    est = torch.tensor([[[3.0, 4.0], [1.0, 0.0], [6.0, 8.0]]])
    res = PITLoss(SNRWithZeroRefs(eps=EPS))(est, ref, prompt_groups([["speech", "speech", "sfx"]]))
    silent_term = 0.1 * db(1 + 1e-3 * 25 + EPS)  # group mixture = speech_1 only (|.|^2 = 25), not the sfx (100)
    assert res.perm.tolist() == [[0, 1, 2]]
    assert abs(float(res.per_source[0, 1]) - silent_term) < 1e-5


def test_spare_outputs_match_silent_references():
    ref = torch.tensor([[[3.0, 4.0], [0.0, 1.0]]])
    est = torch.tensor([[[0.0, 0.0], [0.0, 1.0], [3.0, 4.0], [0.5, 0.0]]])  # conventional model: 4 outputs
    res = PITLoss(SNRWithZeroRefs(eps=EPS))(est, ref)
    assert res.perm[0, :2].tolist() == [2, 1] and res.est.shape == (1, 4, 2)
    mix_energy = 3.0**2 + 5.0**2  # sum of all references: (3, 5)
    tau = 1e-3
    perfect = [db(tau * 25 + EPS) - db(25 + EPS), db(tau * 1 + EPS) - db(1 + EPS)]
    spare = sorted([0.1 * db(0 + tau * mix_energy + EPS), 0.1 * db(0.25 + tau * mix_energy + EPS)])
    got = res.per_source[0].tolist()
    assert got[:2] == pytest.approx(perfect, abs=1e-4) and sorted(got[2:]) == pytest.approx(spare, abs=1e-4)
    assert float(res.loss) == pytest.approx(sum(perfect + spare) / 4, abs=1e-4)


def test_vectorised_search_equals_brute_force_and_gradients_flow():
    torch.manual_seed(1)
    prompts = [["speech", "sfx", "speech", "sfx"], ["drums", "bass", "vocals", "other"], ["sfx"] * 4]
    est = torch.randn(3, 4, 64, requires_grad=True)
    ref = torch.randn(3, 4, 64)
    ref[0, 2] = 0.0  # one silent reference
    fn = SNRWithZeroRefs()
    res = PITLoss(fn)(est, ref, prompt_groups(prompts))
    for b, item in enumerate(prompts):
        best = math.inf
        for perm in itertools.permutations(range(4)):
            if any(item[p] != item[j] for j, p in enumerate(perm)):
                continue
            same = torch.tensor([[float(item[i] == item[j]) for j in range(4)] for i in range(4)])
            mix = same @ ref[b]
            best = min(best, float(fn(est.detach()[b, list(perm)], ref[b], mix).mean()))
        assert float(res.per_source[b].detach().mean()) == pytest.approx(best, abs=1e-5)
    res.loss.backward()
    assert est.grad is not None and torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0


def test_many_outputs_use_the_hungarian_method():
    torch.manual_seed(2)
    ref = torch.randn(2, 9, 50)
    perm = torch.randperm(9)
    res = PITLoss(NegSNR())(ref[:, perm], ref)
    inverse = torch.argsort(perm)
    assert res.perm.tolist() == [inverse.tolist()] * 2
    torch.testing.assert_close(res.est, ref)


def test_plain_snr_and_si_snr_losses():
    ref = torch.tensor([3.0, 4.0])
    assert float(NegSNR(eps=0)(torch.tensor([3.0, 3.0]), ref)) == pytest.approx(-db(25 / 1))
    r = torch.tensor([1.0, 1.0, 0.0, 0.0])
    e = torch.tensor([2.0, 2.0, 1.0, -1.0])  # 2 r + orthogonal part of energy 2: SI-SNR = 10 log10(8 / 2)
    assert float(NegSISNR(eps=0)(e, r)) == pytest.approx(-db(4.0), abs=1e-5)


def test_build_loss():
    assert isinstance(build_loss("snr_with_zero_refs", {"snr_max": 20}), SNRWithZeroRefs)
    assert build_loss("snr_with_zero_refs", {"snr_max": 20}).tau_scale == pytest.approx(0.01)
    with pytest.raises(ValueError, match="loss_func_name must be one of"):
        build_loss("sdr")
    with pytest.raises(ValueError, match="loss_func_conf does not fit"):
        build_loss("snr", {"snr_max": 30})
    with pytest.raises(ValueError, match="references must be"):
        PITLoss(NegSNR())(torch.zeros(1, 2, 5), torch.zeros(1, 3, 5))

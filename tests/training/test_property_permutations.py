"""Property: PITLoss's permutation solver finds the cheapest assignment, by enumeration (up to 8 outputs) and by the
Hungarian method (above), with and without groups (outputs swap only within their group)."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import training.losses as losses
from training.losses import NegSNR, PITLoss

BATCH = 6


def random_problem(gen: torch.Generator, s: int, grouped: bool):
    """``cost (b, s, s)`` masked with inf across groups as ``PITLoss.forward`` does, ``same (b, s, s)``, groups."""
    cost = torch.rand(BATCH, s, s, generator=gen) * 10 - 3  # negative costs too (losses in dB are)
    if grouped:
        groups = torch.randint(0, max(1, s // 2), (BATCH, s), generator=gen)
        groups[0] = 0  # one item where everything may swap
        groups[1] = torch.arange(s)  # one where nothing may
    else:
        groups = torch.zeros(BATCH, s, dtype=torch.int64)
    same = groups[:, :, None] == groups[:, None, :]
    return cost.masked_fill(~same, math.inf), same, groups


def totals(cost: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``(b,)`` summed cost of ``perm``: output ``perm[b, j]`` matched to reference ``j``."""
    rows = torch.arange(cost.shape[0])[:, None]
    cols = torch.arange(cost.shape[-1]).expand_as(perm)
    return cost[rows, perm, cols].sum(-1)


def scipy_assignment(cost: torch.Tensor) -> torch.Tensor:
    """The Hungarian solution by scipy itself (inf entries are forbidden pairs), as ``(b, s)`` perms."""
    out = []
    for item in cost.double().numpy():
        rows, cols = linear_sum_assignment(item)  # row i (output) -> column j (reference)
        perm = np.empty_like(rows)
        perm[cols] = rows
        out.append(perm)
    return torch.from_numpy(np.stack(out)).long()


def assert_valid(perm: torch.Tensor, groups: torch.Tensor):
    s = perm.shape[-1]
    assert torch.equal(perm.sort(-1).values, torch.arange(s).expand_as(perm)), "not a permutation"
    assert torch.equal(groups.gather(1, perm), groups), "an output was matched outside its group"


def random_valid_perms(rng: np.random.Generator, groups: torch.Tensor, count: int) -> torch.Tensor:
    """``(count, b, s)`` random permutations that shuffle outputs within their groups only."""
    b, s = groups.shape
    out = np.tile(np.arange(s), (count, b, 1))
    for k in range(count):
        for i in range(b):
            for g in groups[i].unique().tolist():
                idx = np.flatnonzero(groups[i].numpy() == g)
                out[k, i, idx] = rng.permutation(idx)
    return torch.from_numpy(out)


@pytest.mark.parametrize("grouped", [False, True], ids=["all-swap", "groups"])
@pytest.mark.parametrize("s", range(2, 9))
def test_enumeration_agrees_with_the_hungarian_method(s, grouped, monkeypatch):
    gen = torch.Generator().manual_seed(100 * s + grouped)
    cost, same, groups = random_problem(gen, s, grouped)
    pit = PITLoss(NegSNR())
    enumerated = pit._solve(cost, same)
    monkeypatch.setattr(losses, "_MAX_ENUMERATED", 0)  # the same call, solved by the Hungarian branch
    hungarian = pit._solve(cost, same)
    monkeypatch.undo()
    reference = scipy_assignment(cost)
    for perm in (enumerated, hungarian, reference):
        assert perm.shape == (BATCH, s) and perm.dtype == torch.int64
        assert_valid(perm, groups)
    best = totals(cost, reference)
    assert torch.isfinite(best).all()
    torch.testing.assert_close(totals(cost, enumerated), best, rtol=0, atol=1e-5)
    torch.testing.assert_close(totals(cost, hungarian), best, rtol=0, atol=1e-5)
    # random float costs: the optimum is unique, so the assignments agree too
    assert torch.equal(enumerated, reference)
    assert torch.equal(hungarian, reference)


@pytest.mark.parametrize("grouped", [False, True], ids=["all-swap", "groups"])
@pytest.mark.parametrize("s", [2, 3, 5, 8, 9, 12])
def test_the_solution_is_no_worse_than_random_valid_permutations(s, grouped):
    """s = 9 and 12 take the Hungarian branch of ``_solve`` as it is configured."""
    gen = torch.Generator().manual_seed(7 + 31 * s + grouped)
    cost, same, groups = random_problem(gen, s, grouped)
    perm = PITLoss(NegSNR())._solve(cost, same)
    assert_valid(perm, groups)
    best = totals(cost, perm)
    others = random_valid_perms(np.random.default_rng(s), groups, 200)
    other_totals = torch.stack([totals(cost, p) for p in others])  # (200, b)
    assert (best[None] <= other_totals + 1e-5).all()
    if s > 8:
        assert torch.equal(perm, scipy_assignment(cost))


def test_forward_reorders_estimates_to_the_cheapest_assignment():
    """End to end: shuffled references are matched back, also above the enumeration threshold."""
    gen = torch.Generator().manual_seed(3)
    for s in (3, 10):
        ref = torch.randn(2, s, 400, generator=gen)
        order = torch.stack([torch.randperm(s, generator=gen) for _ in range(2)])
        est = ref.gather(1, order[:, :, None].expand(-1, -1, 400)) + 0.01 * torch.randn(2, s, 400, generator=gen)
        result = PITLoss(NegSNR())(est, ref)
        # output perm[b, j] goes to reference j, and output order^-1[j] holds reference j
        assert torch.equal(result.perm, order.argsort(-1))
        torch.testing.assert_close(result.est, ref, atol=0.05, rtol=0)

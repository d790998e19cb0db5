"""Property: for a model acting sample by sample, chunk-wise separation (overlap-average of segments) equals the plain
forward pass, whatever the segment, shift and batch sizes and the recording length."""

import random

import pytest
import torch

from separation.css import css_forward

#: pointwise, length-preserving stand-ins for a model: ``(m, w) -> (m, s, w)``
STUBS = {
    "scale": lambda segs: torch.stack([segs, 0.5 * segs], 1),
    "tanh": lambda segs: torch.stack([torch.tanh(3 * segs), segs.pow(2), torch.full_like(segs, 0.25)], 1),
    "affine": lambda segs: (1.5 * segs - 0.2).unsqueeze(1),  # f(0) != 0: the zero-padded tail must be discarded
}
#: pointwise stubs whose two outputs anti-correlate, so aligning segments (solve_perm) must keep their order
ANTI = {
    "neg": lambda segs: torch.stack([segs, -segs], 1),
    "neg-tanh": lambda segs: torch.stack([torch.tanh(2 * segs), -torch.tanh(segs)], 1),
}


def tolerance(expected: torch.Tensor, segment: int, shift: int) -> float:
    """1e-6 relative to the peak (at least 1) per overlapping segment: the accumulator is float32, so summing
    ``ceil(segment / shift)`` copies of a value before dividing rounds by up to about that many ulps (measured:
    2e-8 per overlap; any real error — a lost, shifted or mis-weighted segment — is of the order of the signal)."""
    return 1e-6 * max(1.0, expected.abs().max().item()) * -(-segment // shift)


def random_cases(seed: int, count: int):
    rng = random.Random(seed)
    for _ in range(count):
        segment = rng.randint(1, 300)
        shift = rng.randint(1, segment)
        long = rng.random() < 0.75
        n = rng.randint(segment + 1, 4 * segment + 50) if long else rng.randint(1, segment)
        yield segment, shift, n, rng.randint(1, 4), rng.randint(1, 3), rng


def test_css_of_a_pointwise_model_equals_the_plain_forward():
    checked = 0
    for case, (segment, shift, n, batch_size, items, rng) in enumerate(random_cases(seed=2024, count=80)):
        name = rng.choice(sorted(STUBS))
        fn = STUBS[name]
        mix = torch.randn(items, n, generator=torch.Generator().manual_seed(case))
        calls = []

        def counted(segs, fn=fn, calls=calls):
            calls.append(segs.shape[0])
            return fn(segs)

        out = css_forward(counted, mix, segment, shift, batch_size=batch_size)
        expected = fn(mix)
        where = f"case {case}: {name}, segment {segment}, shift {shift}, n {n}, batch {batch_size}, items {items}"
        assert out.shape == expected.shape, where
        assert (out - expected).abs().max() <= tolerance(expected, segment, shift), where
        if n > segment:  # really chunk-wise: segments of the given size, at most batch_size per call
            assert max(calls) <= batch_size, where
            assert sum(calls) == items * (-(-(n - segment) // shift) + 1), where
            checked += 1
    assert checked >= 50


def test_aligning_segments_keeps_a_consistent_models_order():
    """``solve_perm`` on a pointwise model whose outputs anti-correlate: every overlap agrees best unchanged."""
    for case, (segment, shift, n, batch_size, items, rng) in enumerate(random_cases(seed=77, count=50)):
        name = rng.choice(sorted(ANTI))
        fn = ANTI[name]
        mix = torch.randn(items, n, generator=torch.Generator().manual_seed(10_000 + case))
        prompts = rng.choice([None, ["speech", "speech"], [["sfx", "sfx"]] * items])
        out = css_forward(fn, mix, segment, shift, batch_size=batch_size, solve_perm=True, prompts=prompts)
        where = f"case {case}: {name}, segment {segment}, shift {shift}, n {n}, prompts {prompts}"
        expected = fn(mix)
        assert (out - expected).abs().max() <= tolerance(expected, segment, shift), where


@pytest.mark.parametrize("segment,shift", [(64, 64), (64, 1), (100, 37)])
def test_every_segment_output_is_averaged_with_equal_weight(segment, shift):
    """A (non-pointwise) model returning a different constant for every segment, in the order segments are fed:
    each output sample is the plain mean of the constants of the segments covering it (none lost, none doubled)."""
    n = 5 * segment + 3
    mix = torch.zeros(1, n)
    counter = iter(range(10_000))
    values = []

    def constant_per_segment(segs):
        vals = torch.tensor([float(next(counter)) for _ in range(segs.shape[0])])
        values.extend(vals.tolist())
        return vals[:, None, None].expand(-1, 1, segs.shape[-1])

    out = css_forward(constant_per_segment, mix, segment, shift, batch_size=3)[0, 0]
    starts = [k * shift for k in range(len(values))]
    expected = torch.tensor([sum(v for st, v in zip(starts, values, strict=True) if st <= i < st + segment)
                             / sum(1 for st in starts if st <= i < st + segment) for i in range(n)])
    assert (out - expected).abs().max() <= 1e-5

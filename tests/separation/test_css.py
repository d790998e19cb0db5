"""Chunk-wise processing (CSS): equals the plain forward for one segment, overlap-average, alignment, streaming."""

import pytest
import torch

from separation.css import css_forward, segment_starts


def test_segment_starts():
    assert segment_starts(10, 4, 2) == [0, 2, 4, 6]  # last segment 6..10 ends exactly at the end
    assert segment_starts(11, 4, 2) == [0, 2, 4, 6, 8]  # 8..12 is zero-padded
    assert segment_starts(3, 4, 4) == [0]
    with pytest.raises(ValueError, match="shift_size 5 is larger than segment_size 4"):
        segment_starts(10, 4, 5)


def test_one_segment_equals_plain_forward():
    calls = []

    def fn(x):
        calls.append(x.shape)
        return torch.stack([x * 2, x.flip(-1)], dim=1)  # depends on the whole input: padding would show

    mix = torch.randn(2, 1000)
    out = css_forward(fn, mix, segment_size=1000, shift_size=1000)
    torch.testing.assert_close(out, fn(mix))
    assert calls[0] == (2, 1000)


def test_overlap_average_of_a_known_model():
    """A stub whose output depends on the segment: the stitched result is the hand-computed overlap average."""
    def fn(x):  # output 0: segment mean everywhere; output 1: the input
        return torch.stack([x.mean(-1, keepdim=True).expand_as(x), x], dim=1)

    mix = torch.arange(10.0)[None]
    out = css_forward(fn, mix, segment_size=4, shift_size=2, batch_size=3)
    # segments (zero-padded): [0..3], [2..5], [4..7], [6..9]
    means = [1.5, 3.5, 5.5, 7.5]
    expected = torch.zeros(10)
    cover = torch.zeros(10)
    for i, st in enumerate([0, 2, 4, 6]):
        expected[st : st + 4] += means[i]
        cover[st : st + 4] += 1
    torch.testing.assert_close(out[0, 0], expected / cover)
    torch.testing.assert_close(out[0, 1], mix[0])  # identity through overlap-add returns the input
    # a padded last segment: 11 samples, last segment 8..11 holds a zero
    out = css_forward(fn, torch.arange(11.0)[None], 4, 2)
    torch.testing.assert_close(out[0, 1], torch.arange(11.0))
    assert out[0, 0, -1] == pytest.approx((8 + 9 + 10 + 0) / 4)


def test_batch_size_does_not_change_the_result():
    torch.manual_seed(0)
    w = torch.randn(3, 1)

    def fn(x):
        return torch.tanh(x[:, None, :] * w[None] + x.roll(1, -1)[:, None, :])

    mix = torch.randn(1, 5000)
    a = css_forward(fn, mix, 700, 300, batch_size=1)
    b = css_forward(fn, mix, 700, 300, batch_size=8)
    torch.testing.assert_close(a, b)


def test_alignment_fixes_swapped_same_prompt_outputs():
    """Two ``speech`` outputs swapped in alternate segments come out consistent with ``solve_perm``; the ``sfx``
    output (a different prompt) is never swapped."""
    n, seg, shift = 4000, 1000, 500
    t = torch.arange(n, dtype=torch.float32)
    a, bb, c = torch.sin(t * 0.05), torch.sign(torch.sin(t * 0.013)), torch.sin(t * 0.31) * 0.5
    calls = {"i": 0}

    def fn(x):  # knows the sources; swaps the two speech outputs in every other segment
        outs = []
        for _ in x:
            st = calls["i"] * shift
            calls["i"] += 1
            sl = slice(st, st + seg)
            pad = seg - a[sl].shape[0]
            src = [torch.nn.functional.pad(v[sl], (0, pad)) for v in (a, bb, c)]
            if calls["i"] % 2 == 0:
                src = [src[1], src[0], src[2]]
            outs.append(torch.stack(src))
        return torch.stack(outs)

    mix = (a + bb + c)[None]
    out = css_forward(fn, mix, seg, shift, solve_perm=True, prompts=["speech", "speech", "sfx"])
    torch.testing.assert_close(out[0, 0], a, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0, 1], bb, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0, 2], c, atol=1e-5, rtol=0)
    calls["i"] = 0
    unaligned = css_forward(fn, mix, seg, shift, solve_perm=False, prompts=["speech", "speech", "sfx"])
    assert (unaligned[0, 0] - a).abs().max() > 0.1  # without alignment the swaps smear the outputs


def test_progress_callback_counts_segments():
    seen = []
    css_forward(lambda x: x[:, None], torch.randn(1, 100), 20, 10, batch_size=4, progress=seen.append)
    assert sum(seen) == len(segment_starts(100, 20, 10)) and seen == [4, 4, 1]


def test_batch_items_are_processed_in_turn_into_one_output():
    def fn(x):
        return torch.stack([x, -2 * x], dim=1)

    mix = torch.randn(3, 2500)
    out = css_forward(fn, mix, 1000, 400, batch_size=2, solve_perm=True, prompts=[["a", "a"], ["a", "b"], ["b", "b"]])
    assert out.shape == (3, 2, 2500)
    # the first output is the input everywhere; with equal prompts the second (-2x) is never swapped into its place
    torch.testing.assert_close(out[:, 0], mix)
    torch.testing.assert_close(out[:, 1], -2 * mix)

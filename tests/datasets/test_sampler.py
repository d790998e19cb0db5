"""Prompt Markov chain and source-count batches: statistics over many draws match the config."""

import itertools
from collections import Counter

import numpy as np
import pytest

from datasets.sampler import MixtureKey, PromptSampler, ShardSampler, SourceCountBatchSampler, parse_weights
from tests.helpers import load_fixture

N = 20000


def close(count: int, n: int, p: float) -> bool:
    """A frequency within 5 binomial standard deviations of ``p``."""
    return abs(count / n - p) <= 5 * np.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-9


def chains(sampler: PromptSampler, num: int, n: int = N, seed: int = 0) -> list[tuple[str, ...]]:
    rng = np.random.default_rng(seed)
    return [tuple(sampler.sample(num, rng)) for _ in range(n)]


def conf(init, nxt, appear=None):
    return {p: {"init_prob": init[p], "next": nxt[p], "num_appear": (appear or {}).get(p, 100), "gain": [0, 0]}
            for p in init}


def test_first_prompt_follows_init_prob():
    s = PromptSampler(conf({"a": 0.5, "b": 0.3, "c": 0.2},
                           {p: {"a": 1, "b": 1, "c": 1} for p in "abc"}))
    first = Counter(c[0] for c in chains(s, 1))
    for p, prob in {"a": 0.5, "b": 0.3, "c": 0.2}.items():
        assert close(first[p], N, prob), (p, first[p] / N)


def test_transitions_follow_next_tables():
    nxt = {"a": {"a": 0.5, "b": 0.3, "c": 0.2}, "b": {"a": 0.1, "b": 0.1, "c": 0.8},
           "c": {"a": 0.6, "b": 0.2, "c": 0.2}}
    s = PromptSampler(conf({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, nxt))
    pairs = Counter(c[:2] for c in chains(s, 2))
    for first in "abc":
        total = sum(pairs[(first, x)] for x in "abc")
        for second, prob in nxt[first].items():
            assert close(pairs[(first, second)], total, prob), (first, second, pairs[(first, second)] / total)


def test_num_appear_caps_and_renormalises():
    # a may appear once: after a, the 0.5 of a->a is shared by b and c in proportion (0.25 : 0.25 -> 0.5 : 0.5)
    s = PromptSampler(conf({"a": 1.0, "b": 0.0, "c": 0.0},
                           {"a": {"a": 0.5, "b": 0.25, "c": 0.25}, "b": {"a": 1, "b": 1, "c": 1},
                            "c": {"a": 1, "b": 1, "c": 1}}, appear={"a": 1}))
    draws = chains(s, 3)
    assert all(c.count("a") == 1 and c[0] == "a" for c in draws)
    second = Counter(c[1] for c in draws)
    assert close(second["b"], N, 0.5) and close(second["c"], N, 0.5)


def test_zero_probability_excludes_for_the_rest_of_the_chain():
    # a forbids c (a.next[c] = 0); b and d allow c, but once a is chosen c never follows, however late
    allow = {p: {q: float(q != p) for q in "abcd"} for p in "abcd"}
    allow["a"]["c"] = 0.0
    s = PromptSampler(conf(dict.fromkeys("abcd", 0.25), allow, appear=dict.fromkeys("abcd", 1)))
    draws = chains(s, 3, 8000)
    assert not [c for c in draws if "a" in c and "c" in c and c.index("a") < c.index("c")]
    assert {c for c in draws if c[0] == "a"} == {("a", "b", "d"), ("a", "d", "b")}
    assert any(c[:2] == ("c", "a") for c in draws)  # c allows a: the exclusion only looks forward
    # after (b, d) the allowed set is {a, c}, equally likely under d's table
    third = Counter(c[2] for c in draws if c[:2] == ("b", "d"))
    assert set(third) == {"a", "c"} and close(third["a"], sum(third.values()), 0.5)


def test_dead_end_raises_clear_error():
    s = PromptSampler(conf({"a": 1.0}, {"a": {"a": 0.0}}, appear={"a": 1}), max_tries=5)
    with pytest.raises(ValueError, match="cannot produce 2 prompts"):
        s.sample(2, np.random.default_rng(0))


def test_unavailable_prompts_are_never_drawn():
    s = PromptSampler(conf({"a": 0.5, "b": 0.5}, {p: {"a": 1, "b": 1} for p in "ab"}), available={"a"})
    assert {p for c in chains(s, 3, 500) for p in c} == {"a"}
    with pytest.raises(ValueError, match="init_prob"):
        PromptSampler(conf({"a": 1.0, "b": 0.0}, {p: {"a": 1, "b": 1} for p in "ab"}), available={"b"})


def test_published_chain_statistics():
    prompts = load_fixture("tuss")["hparams"]["prompts"]
    s = PromptSampler(prompts)
    draws = chains(s, 4, 6000)
    first = Counter(c[0] for c in draws)
    for p, c in prompts.items():
        assert close(first[p], len(draws), c["init_prob"]), p
    stems = {"drums", "bass", "vocals", "other"}
    for c in draws:
        assert not ("sfx" in c and "sfxbg" in c)  # sfx.next[sfxbg] = sfxbg.next[sfx] = 0
        assert not ("musicbg" in c and stems & set(c))  # musicbg never with a stem
        assert all(c.count(p) <= prompts[p]["num_appear"] for p in c)
    # speech -> speech is 0.4 of speech's table and nothing excludes it after one speech
    after_speech = Counter(c[1] for c in draws if c[0] == "speech")
    assert close(after_speech["speech"], sum(after_speech.values()), 0.4)
    assert s.reachable() == set(prompts)


def test_batch_sampler_counts_weights_and_seeding():
    weights = {1: 0.0, 2: 0.25, 3: 0.25, 4: 0.5}
    bs = SourceCountBatchSampler(4000, 3, weights, seed=7)
    batches = list(bs)
    assert len(batches) == len(bs) == 4000 and all(len(b) == 3 for b in batches)
    assert all(len({k.num_src for k in b}) == 1 for b in batches)
    counts = Counter(b[0].num_src for b in batches)
    assert counts[1] == 0
    for n, p in ((2, 0.25), (3, 0.25), (4, 0.5)):
        assert close(counts[n], 4000, p)
    indices = [k.index for b in batches for k in b]
    assert indices == list(range(12000))  # every mixture of the epoch has its own index
    assert batches[0][0] == MixtureKey(0, 0, 0, batches[0][0].num_src)
    again = list(SourceCountBatchSampler(4000, 3, weights, seed=7))
    assert again == batches  # reproducible from the seed
    other_rank = list(SourceCountBatchSampler(4000, 3, weights, seed=7, rank=1))
    assert [b[0].num_src for b in other_rank] != [b[0].num_src for b in batches]
    bs.set_epoch(1)
    assert [b[0].num_src for b in bs] != [b[0].num_src for b in batches]
    with pytest.raises(ValueError, match="max_num_src"):
        SourceCountBatchSampler(2, 1, {5: 1.0}, seed=0, max_num_src=4)


def test_parse_weights():
    values, probs = parse_weights({"1": 0.0, "2": 1, 3: 3})
    assert values.tolist() == [2, 3] and np.allclose(probs, [0.25, 0.75])
    for bad in ({}, {1: 0.0}, {"x": 1.0}, {2: -1.0}, [2, 3]):
        with pytest.raises(ValueError, match="num_srcs_and_weights"):
            parse_weights(bad)


def test_shard_sampler_splits_without_duplicates_and_pads_with_none():
    shards = [list(ShardSampler(11, r, 3)) for r in range(3)]
    assert sorted(i for i in itertools.chain(*shards) if i is not None) == list(range(11))
    assert shards[2] == [2, 5, 8, None]  # equal step counts on every process
    assert [len(ShardSampler(11, r, 3)) for r in range(3)] == [4, 4, 4]
    assert list(ShardSampler(3, 0, 1)) == [0, 1, 2]

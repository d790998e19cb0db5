"""Random choices of dynamic mixing (docs/architecture.md §9): the prompt Markov chain, source-count weights, and the
samplers that decide which mixtures a process draws.

Seeding: a training mixture is identified by a :class:`MixtureKey` ``(epoch, rank, index, num_src)``; everything
random about it (prompts, files, crops, gains) comes from a generator seeded with ``(seed, epoch, rank, index)``.
The key is made by :class:`SourceCountBatchSampler` in the main process and sent to whichever dataloader worker
loads it, so different DDP ranks, epochs and workers (which receive different indices) draw different mixtures,
and a run is reproducible from its seed whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple

import numpy as np

__all__ = ["MixtureKey", "item_rng", "parse_weights", "PromptSampler", "SourceCountBatchSampler", "ShardSampler"]

# domain tags keep the generators of the batch sampler and of the items apart
_BATCH_STREAM, _ITEM_STREAM = 0, 1


class MixtureKey(NamedTuple):
    """Identity of one training mixture: drawn in ``epoch`` by process ``rank`` as its ``index``-th item, with
    ``num_src`` sources."""

    epoch: int
    rank: int
    index: int
    num_src: int


def item_rng(seed: int, key: MixtureKey) -> np.random.Generator:
    """The generator of one mixture (independent of the worker that loads it)."""
    return np.random.default_rng([int(seed), _ITEM_STREAM, key.epoch, key.rank, key.index])


def parse_weights(weights: Mapping, what: str = "num_srcs_and_weights") -> tuple[np.ndarray, np.ndarray]:
    """``{value: weight}`` (e.g. ``{1: 0.0, 2: 0.333, 3: 0.333, 4: 0.333}``) -> ``(values, probabilities)``.

    Zero-weight values are dropped; weights are normalised to sum to one. Keys may be ints or numeric strings.

    Raises:
        ValueError: not a mapping, a non-integer key, a negative weight, or no positive weight.
    """
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(f"{what} must be a mapping {{count: weight}}, got {weights!r}")
    values, probs = [], []
    for key, weight in weights.items():
        try:
            value = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"{what}: key {key!r} is not an integer source count") from None
        if value < 1 or float(key) != value:
            raise ValueError(f"{what}: key {key!r} must be a positive integer")
        if not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(f"{what}: weight of {key!r} must be a non-negative number, got {weight!r}")
        if weight > 0:
            values.append(value)
            probs.append(float(weight))
    if not values:
        raise ValueError(f"{what} has no positive weight: {dict(weights)!r}")
    probs_arr = np.asarray(probs)
    return np.asarray(values, dtype=np.int64), probs_arr / probs_arr.sum()


class PromptSampler:
    """The prompt Markov chain of dynamic mixing.

    The first prompt is drawn from ``init_prob``; each next one from the previous prompt's ``next`` table,
    restricted to prompts that (a) have appeared fewer than ``num_appear`` times and (b) no prompt chosen so far
    excludes (``next[chosen][p] == 0``, or ``p`` missing from that table). Probabilities are renormalised over the
    allowed prompts. A chain that reaches a dead end is drawn again (at most ``max_tries`` times).

    Args:
        prompts_conf: ``{name: {"init_prob", "next": {name: p}, "num_appear", ...}}`` (config ``prompts``).
        available: prompt names that can actually be produced; others get probability zero.
        max_tries: chains drawn before giving up on one mixture.
    """

    def __init__(self, prompts_conf: Mapping[str, Mapping], available: set[str] | None = None, max_tries: int = 100):
        if not isinstance(prompts_conf, Mapping) or not prompts_conf:
            raise ValueError("config 'prompts' must map prompt names to {init_prob, next, num_appear, gain}")
        self.names: tuple[str, ...] = tuple(prompts_conf)
        index = {n: i for i, n in enumerate(self.names)}
        p = len(self.names)
        self.init = np.zeros(p)
        self.next = np.zeros((p, p))  # next[i, j]: probability of j after i
        self.num_appear = np.zeros(p, dtype=np.int64)
        for i, name in enumerate(self.names):
            conf = prompts_conf[name]
            for key in ("init_prob", "next", "num_appear"):
                if key not in conf:
                    raise ValueError(f"prompts.{name} has no {key!r} (needs init_prob, next, num_appear, gain)")
            self.init[i] = float(conf["init_prob"])
            self.num_appear[i] = int(conf["num_appear"])
            for other, prob in conf["next"].items():
                if other not in index:
                    raise ValueError(f"prompts.{name}.next names {other!r}, which is not a prompt in 'prompts'")
                self.next[i, index[other]] = float(prob)
        if (self.init < 0).any() or (self.next < 0).any() or (self.num_appear < 0).any():
            raise ValueError("prompts: init_prob, next probabilities and num_appear must be non-negative")
        if available is not None:
            off = np.array([n not in available for n in self.names])
            self.init[off] = 0.0
            self.next[:, off] = 0.0
        if self.init.sum() <= 0:
            raise ValueError("prompts: no prompt has a positive init_prob (among prompts with training audio)")
        self.max_tries = max_tries

    def reachable(self) -> set[str]:
        """Prompts that some chain can draw (positive probability from the start or after another prompt)."""
        reach = self.init > 0
        while True:
            grown = reach | (self.next[reach] > 0).any(axis=0)
            if (grown == reach).all():
                return {n for n, r in zip(self.names, reach, strict=True) if r}
            reach = grown

    def sample(self, num: int, rng: np.random.Generator) -> list[str]:
        """Draw a chain of ``num`` prompts.

        Raises:
            ValueError: no chain of that length exists (after ``max_tries`` attempts).
        """
        for _ in range(self.max_tries):
            chain = self._try(num, rng)
            if chain is not None:
                return [self.names[i] for i in chain]
        raise ValueError(f"the prompt chain cannot produce {num} prompts (tried {self.max_tries} times): check "
                         "init_prob, next and num_appear in 'prompts'")

    def _try(self, num: int, rng: np.random.Generator) -> list[int] | None:
        counts = np.zeros(len(self.names), dtype=np.int64)
        allowed = np.ones(len(self.names), dtype=bool)
        probs = self.init
        chain: list[int] = []
        for _ in range(num):
            weights = np.where(allowed & (counts < self.num_appear), probs, 0.0)
            total = weights.sum()
            if total <= 0:
                return None
            choice = int(rng.choice(len(weights), p=weights / total))
            chain.append(choice)
            counts[choice] += 1
            allowed &= self.next[choice] > 0
            probs = self.next[choice]
        return chain


class SourceCountBatchSampler:
    """Batches of :class:`MixtureKey` for one process: ``num_batches`` batches of ``batch_size`` mixtures, the
    source count of each batch drawn from ``num_srcs_and_weights`` (all items of a batch share it, so they stack).

    Mixtures per epoch over all processes = ``num_batches * batch_size * world_size``. Call :meth:`set_epoch` at
    the start of every epoch so each epoch draws new mixtures (the Lightning module does; Lightning itself only
    sets the epoch of a DataLoader's ``sampler``). A run resumed in the middle of an epoch calls
    ``set_epoch(epoch, start_batch)``: the next pass yields that epoch's batches from ``start_batch`` on, exactly
    those the uninterrupted run would have drawn (each batch's keys depend only on seed, epoch, rank and index).

    >>> s = SourceCountBatchSampler(3, 2, {2: 1.0}, seed=0)
    >>> [[k.index for k in batch] for batch in s]
    [[0, 1], [2, 3], [4, 5]]
    >>> s.set_epoch(1, start_batch=2)
    >>> [(k.epoch, k.index) for batch in s for k in batch]
    [(1, 4), (1, 5)]
    """

    def __init__(self, num_batches: int, batch_size: int, num_srcs_and_weights: Mapping, seed: int,
                 rank: int = 0, max_num_src: int | None = None):
        if int(num_batches) < 1 or int(batch_size) < 1:
            raise ValueError(f"need at least one batch of one mixture, got {num_batches} batches of {batch_size}")
        self.num_batches, self.batch_size = int(num_batches), int(batch_size)
        self.counts, self.probs = parse_weights(num_srcs_and_weights)
        if max_num_src is not None and self.counts.max() > max_num_src:
            raise ValueError(f"num_srcs_and_weights gives weight to {int(self.counts.max())} sources but "
                             f"dataset_conf.train.max_num_src is {max_num_src}")
        self.seed, self.rank, self.epoch, self.start_batch = int(seed), int(rank), 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Draw epoch ``epoch`` from batch ``start_batch`` on (a resumed epoch), on every pass until the next call
        (Lightning may create the epoch's iterator more than once)."""
        if not 0 <= int(start_batch) <= self.num_batches:
            raise ValueError(f"start_batch must be in [0, {self.num_batches}], got {start_batch}")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __len__(self) -> int:
        return self.num_batches  # the full epoch, also when resuming: Lightning counts the batches already done

    def __iter__(self) -> Iterator[list[MixtureKey]]:
        epoch, start = self.epoch, self.start_batch  # read now: DataLoader iterators start early
        rng = np.random.default_rng([self.seed, _BATCH_STREAM, epoch, self.rank])
        nums = rng.choice(self.counts, size=self.num_batches, p=self.probs)
        return iter([[MixtureKey(epoch, self.rank, b * self.batch_size + i, int(nums[b]))
                      for i in range(self.batch_size)] for b in range(start, self.num_batches)])


class ShardSampler:
    """Indices ``rank, rank + world_size, …`` of a dataset of ``length`` items: every item is seen by exactly one
    process, without the duplicates of ``DistributedSampler`` (validation and test metrics stay exact).

    Every process yields the same number of indices, ``ceil(length / world_size)``: shorter shards end with ``None``
    (the datasets return ``None`` for it and the collate function drops it), so all processes run the same number of
    steps, as collective operations inside DDP's forward require.
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1):
        self.length, self.rank, self.world_size = int(length), int(rank), max(1, int(world_size))

    def __len__(self) -> int:
        return -(-self.length // self.world_size)

    def __iter__(self) -> Iterator[int | None]:
        own = list(range(self.rank, self.length, self.world_size))
        return iter(own + [None] * (len(self) - len(own)))

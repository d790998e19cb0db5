"""Fixed mixtures for validation and test (manifest shape B, docs/architecture.md §9), and the collate function
of every loader.

The mixture is rebuilt as the sum of the references (the manifests' ``mix`` is not read; MoisesDB has none), from
channel ``channel`` of each reference file, at the manifest's own sample rate. Items are
``{"mix": (n,), "refs": (s, n), "prompts": [s names], "sample_rate", "dataset": dataset_name, "id", "manifest",
"channel"}``; the prompt of a reference is its key before ``_``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.dynamic_mixing import find_missing
from datasets.manifest import ManifestError, known_prompts, load_manifest, ref_prompt
from utils.audio import AudioError, read_audio
from utils.cli import first_line

__all__ = ["FixedDataset", "collate_mixtures"]

log = logging.getLogger(__name__)


class FixedDataset(Dataset):
    """The first ``num_data`` mixtures of a manifest split, optionally sorted by length (longest first).

    Args:
        json_path: manifest whose ``split`` holds fixed mixtures.
        num_data: keep the first N entries in manifest order (``None``: all).
        channel: channel of the reference files to use (``musdb`` test runs channels 0 and 1).
        split: ``"valid"`` or ``"test"``.
        sort_by_length: order by ``num_samples``, longest first (validation: batches of similar length, and the
            largest memory use happens at once).
        prompts: prompt names accepted besides the 8 standard ones.

    Entries with a missing reference file are reported at construction (count and first paths) and skipped
    (:attr:`skipped`). An item whose files cannot be read at load time is logged and returned as a marker
    ``{"skipped": id, "reason", "manifest"}`` (the collate function lists it under the batch's ``skipped``, so the
    evaluation can report it); index ``None`` (the padding of :class:`~datasets.sampler.ShardSampler`) is ``None``.
    A reference with NaN or infinite samples is refused: :class:`~utils.audio.AudioError` naming the file.
    """

    def __init__(self, json_path: str | os.PathLike, num_data: int | None = None, channel: int = 0,
                 split: str = "valid", sort_by_length: bool = True, prompts: Sequence[str] | None = None):
        self.json_path = Path(json_path)
        self.channel, self.split = int(channel), split
        #: ``(id, reason)`` of the mixtures left out at construction (a missing reference file)
        self.skipped: list[tuple[str, str]] = []
        manifest = load_manifest(self.json_path, prompts=known_prompts(prompts or ()))
        shape = manifest.shapes.get(split, "empty")
        if shape == "pool":
            raise ManifestError(f"{self.json_path}: split {split!r} is a source pool; validation and test need fixed "
                                "mixtures {id: {ref: {<prompt>_<k>: path}, ...}}")
        entries = list(manifest.split(split).items())
        if num_data is not None:
            entries = entries[: int(num_data)]
        paths = [p for _, e in entries for p in e["ref"].values()]
        missing = {p for p, m in zip(paths, find_missing(paths), strict=True) if m}
        if missing:
            first = ", ".join(sorted(missing)[:3])
            log.warning("%s (%s): %d reference file(s) missing; %d mixture(s) skipped (first: %s)", self.json_path,
                        split, len(missing), sum(any(p in missing for p in e["ref"].values()) for _, e in entries),
                        first)
            self.skipped = [(str(i), f"missing reference file {next(p for p in e['ref'].values() if p in missing)}")
                            for i, e in entries if any(p in missing for p in e["ref"].values())]
            entries = [(i, e) for i, e in entries if not any(p in missing for p in e["ref"].values())]
        if sort_by_length:
            entries.sort(key=lambda item: -int(item[1]["num_samples"]))  # stable: manifest order among equals
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def name(self) -> str:
        """Manifest stem (plus the channel when it is not 0), e.g. ``musdb18hq_44.1k_sad_ch1``."""
        return self.json_path.stem + (f"_ch{self.channel}" if self.channel else "")

    def __getitem__(self, index: int | None) -> dict | None:
        if index is None:  # padding of a DDP shard (datasets.sampler.ShardSampler)
            return None
        item_id, entry = self.entries[index]
        try:
            refs = []
            for path in entry["ref"].values():
                audio, sr = read_audio(path, channel=self.channel)
                if sr != entry["sample_rate"]:
                    raise ValueError(f"{path} has sample rate {sr} but the manifest says {entry['sample_rate']}")
                refs.append(audio[0])
        except (OSError, RuntimeError, ValueError) as err:
            log.warning("%s (%s): skipping mixture %s: %s", self.json_path, self.split, item_id, err)
            return {"skipped": str(item_id), "reason": first_line(err), "manifest": self.name}
        for path, ref in zip(entry["ref"].values(), refs, strict=True):
            if not np.isfinite(ref).all():  # a metric over NaN would silently poison val/loss and the results
                raise AudioError(f"{path} ({self.json_path}, {self.split} mixture {item_id}) has NaN or infinite "
                                 "samples; fix or remove the file")
        length = max(r.shape[0] for r in refs)
        refs_arr = np.stack([np.pad(r, (0, length - r.shape[0])) for r in refs])
        refs_t = torch.from_numpy(refs_arr)
        return {"mix": refs_t.sum(0), "refs": refs_t, "prompts": [ref_prompt(k) for k in entry["ref"]],
                "sample_rate": int(entry["sample_rate"]), "dataset": entry["dataset_name"], "id": str(item_id),
                "manifest": self.name, "channel": self.channel}


def collate_mixtures(items: Sequence[dict | None]) -> dict | None:
    """Stack items into a batch; ``None`` items (padding) are dropped, the markers of unreadable items
    (:class:`FixedDataset`) go to the batch's ``skipped`` list; a batch of no item is ``None``, one of markers only
    ``{"skipped": [...]}``.

    Returns:
        ``{"mix": (b, n), "refs": (b, s, n), "lengths": (b,) int64, "prompts": [b lists], "sample_rate": int,
        and "dataset", "id", "manifest", "channel", "sources" (the files of each source), "skipped" as lists}``;
        shorter items are zero-padded at the end.

    Raises:
        ValueError: items with different source counts or sample rates (use a batch size of 1).
    """
    skipped = [it for it in items if it is not None and "skipped" in it]
    items = [it for it in items if it is not None and "skipped" not in it]
    if not items:
        return {"skipped": skipped} if skipped else None
    counts = {it["refs"].shape[0] for it in items}
    rates = {it["sample_rate"] for it in items}
    if len(counts) > 1 or len(rates) > 1:
        raise ValueError(f"cannot batch mixtures with different source counts {sorted(counts)} or sample rates "
                         f"{sorted(rates)}; use a batch size of 1 for this dataset")
    lengths = torch.tensor([it["mix"].shape[-1] for it in items], dtype=torch.int64)
    n = int(lengths.max())
    pad = [n - int(length) for length in lengths]
    batch = {
        "mix": torch.stack([torch.nn.functional.pad(it["mix"], (0, p)) for it, p in zip(items, pad, strict=True)]),
        "refs": torch.stack([torch.nn.functional.pad(it["refs"], (0, p)) for it, p in zip(items, pad, strict=True)]),
        "lengths": lengths,
        "prompts": [list(it["prompts"]) for it in items],
        "sample_rate": rates.pop(),
    }
    for key in ("dataset", "id", "manifest", "channel", "sources"):
        batch[key] = [it.get(key) for it in items]
    batch["skipped"] = skipped
    return batch

"""The data of a training run (docs/architecture.md §9, §12): dynamic mixing for training, fixed mixtures for
validation and test, sharded over DDP processes; resumable in the middle of an epoch.

Training batches (``datasets.fixed.collate_mixtures``): ``mix (b, n)``, ``refs (b, s, n)`` at 48 kHz, ``prompts``
(``b`` lists of ``s`` names), ``id`` (``e{epoch}-r{rank}-i{index}``) and ``sources`` (the files of each source);
validation/test batches hold items of one manifest at its own rate, zero-padded to the longest (``lengths (b,)``).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from datasets.dynamic_mixing import DynamicMixingDataset, SourceDrawError
from datasets.fixed import FixedDataset, collate_mixtures
from datasets.manifest import ManifestError
from datasets.sampler import ShardSampler, SourceCountBatchSampler
from training.settings import TrainingSettings
from utils.config import Config, ConfigError, load_config

__all__ = ["SeparationDataModule", "ResumableLoader", "steps_per_epoch", "check_data"]

log = logging.getLogger(__name__)


def steps_per_epoch(settings: TrainingSettings) -> int:
    """Training steps per epoch and process: ``trainer_conf.limit_train_batches``, which must be an integer
    (dynamic mixing has no natural epoch; mixtures per epoch = steps x batch_size x world size)."""
    steps = settings.steps_per_epoch
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"trainer_conf.limit_train_batches must be a positive integer number of steps per epoch "
                          f"(dynamic mixing draws a fresh set each epoch), got {steps!r}")
    return steps


class ResumableLoader(DataLoader):
    """The training loader, resumable in the middle of an epoch (so Lightning knows it is).

    It needs no state of its own in the checkpoint: every mixture derives from (seed, epoch, rank, index), and
    :meth:`SeparationDataModule.train_dataloader` starts the sampler at the batch the restored loop progress says
    is next. ``state_dict``/``load_state_dict`` are Lightning's marker of a resumable loader.
    """

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        return None


def _ignore_stop_signals(worker_id: int) -> None:
    """Data-loader workers (training, validation and test) ignore SIGTERM/SIGUSR1: schedulers signal every process
    of a job (``pkill -f`` too), and the main process stops them itself after saving a checkpoint
    (training.callbacks.PreemptionCheckpoint); a validation worker that died of the signal would fail the run."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


class SeparationDataModule(pl.LightningDataModule):
    """Loaders of the config's ``dataset_conf`` (train: dynamic mixing; valid/test: ``[manifest, N, channel]``).

    Args:
        config: experiment config (path, mapping or :class:`Config`).
        prompts: prompt names accepted in manifests besides the 8 standard ones (the model's).
    """

    def __init__(self, config: str | Mapping, prompts: Sequence[str] = ()):
        super().__init__()
        self.config: Config = load_config(config)
        self.settings = TrainingSettings.from_config(self.config)
        self.prompts = tuple(prompts)

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)

    def train_dataloader(self) -> ResumableLoader:
        cfg, s = self.config, self.settings
        rank, world = self._rank_world()
        dataset = DynamicMixingDataset.from_config(cfg)
        steps = steps_per_epoch(s)
        sampler = SourceCountBatchSampler(steps, s.batch_size, s.num_srcs_and_weights, s.seed, rank, s.max_num_src)
        epoch, done = self._resume_position(steps)
        sampler.set_epoch(epoch, done)
        if rank == 0:
            log.info("training pools:\n%s", dataset.describe())
            log.info("mixtures per epoch: %d steps x batch %d x %d process(es) = %d", steps, s.batch_size, world,
                     steps * s.batch_size * world)
            if done:
                log.info("resuming epoch %d at batch %d of %d", epoch, done, steps)
        return ResumableLoader(dataset, batch_sampler=sampler, num_workers=s.num_workers, collate_fn=collate_mixtures,
                               persistent_workers=s.num_workers > 0, pin_memory=torch.cuda.is_available(),
                               worker_init_fn=_ignore_stop_signals if s.num_workers > 0 else None)

    def _resume_position(self, steps: int) -> tuple[int, int]:
        """``(epoch, batches already done in it)`` where the training loop will continue: ``(0, 0)`` for a fresh
        run; for a run restored from a checkpoint, the position its loop progress holds (a fresh run's progress is
        all zeros; a restored one's is the checkpoint's, whichever hook wrote it: a step's end, the epoch's end)."""
        if self.trainer is None:
            return 0, 0
        epoch = self.trainer.current_epoch  # epochs completed
        done = int(self.trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        progress = self.trainer.fit_loop.epoch_progress.current
        if progress.started == progress.completed:
            # between two epochs: a fresh run, or a checkpoint written at the end of training (a stop on a signal
            # after an epoch's bookkeeping was done, training.callbacks.PreemptionCheckpoint)
            return epoch, 0
        if done >= steps or progress.processed > progress.completed:
            # written at the end of an epoch -- also of one ended early (trainer_conf.max_time stops a run after a
            # batch and ends its epoch there): Lightning goes on with the next epoch, afresh
            return epoch + 1, 0
        return epoch, max(done, 0)

    def _fixed_loaders(self, split: str) -> list[DataLoader]:
        s = self.settings
        rank, world = self._rank_world()
        specs = ((self.config.get("dataset_conf") or {}).get(split) or {}).get("json_path_and_num_data") or []
        loaders = []
        for spec in specs:
            if not isinstance(spec, (list, tuple)) or not 1 <= len(spec) <= 3:
                raise ConfigError(f"dataset_conf.{split}.json_path_and_num_data entries are [path, N or null, "
                                  f"(channel)], got {spec!r}")
            path, num = spec[0], spec[1] if len(spec) > 1 else None
            channel = spec[2] if len(spec) > 2 else 0
            ds = FixedDataset(path, num, channel, split=split, sort_by_length=split == "valid", prompts=self.prompts)
            workers = min(s.num_workers, 2)
            loaders.append(DataLoader(ds, batch_size=s.val_batch_size, collate_fn=collate_mixtures,
                                      sampler=ShardSampler(len(ds), rank, world), num_workers=workers,
                                      worker_init_fn=_ignore_stop_signals if workers > 0 else None))
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self._fixed_loaders("valid")

    def test_dataloader(self) -> list[DataLoader]:
        return self._fixed_loaders("test")


def check_data(config: str | Mapping, prompts: Sequence[str] = (), threads: int = 4) -> None:
    """Refuse, before a run writes anything, the data it would stop on later (docs/training.md, "Checked before
    anything is written"): every manifest of ``dataset_conf`` is parsed and validated; each training pool must give
    a usable recording (readable, finite, not silent: the draw training makes); every validation mixture is read
    (``threads`` at a time) and must have finite references -- a NaN found at the end of the first epoch would
    otherwise stop the run there.

    Raises:
        ManifestError: a manifest that does not parse or validate, or a pool with no usable recording.
        ConfigError: a malformed ``json_path_and_num_data`` entry.
        utils.audio.AudioError: a validation reference with NaN or infinite samples (the message names the file).
    """
    module = SeparationDataModule(config, prompts)
    dataset = DynamicMixingDataset.from_config(module.config)
    rng = np.random.default_rng(module.settings.seed)
    for prompt in sorted(dataset.pools):
        try:
            dataset.draw_recording(prompt, rng)
        except SourceDrawError as err:
            raise ManifestError(f"dataset_conf.train.json_paths: {err}") from None
    module._fixed_loaders("test")  # parsed and validated; read when eval.py runs
    started, count = time.monotonic(), 0
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for loader in module._fixed_loaders("valid"):
            ds = loader.dataset
            for _ in pool.map(ds.__getitem__, range(len(ds))):  # raises the first bad item's error
                count += 1
    if count:
        log.info("validation data checked: %d mixtures in %.1f s", count, time.monotonic() - started)

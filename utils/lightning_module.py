"""The Lightning module of TUSS: training, validation and test steps, optimisation, data loaders, logging.

This is the one home of the training loop's logic; ``train.py`` (through :mod:`utils.training`) and ``eval.py`` use it.

Interface::

    module = SeparationModule(config)                 # builds the network with nets.build_model(config)
    module = SeparationModule(config, model=model)    # or wraps a loaded SeparationModel (eval: nets.load_model)
    module.model                                      # the network; checkpoint keys are model.separator.*
    est = module.separate(mix, prompts, sample_rate, dataset)   # (b, n) at any rate -> (b, s, n) at that rate:
                                                      # resampled to 48 kHz and back, CSS for css_datasets
    trainer.fit(module) / trainer.validate(module) / trainer.test(module)
    module.test_records                               # per output of every test item: {"dataset", "manifest",
                                                      #  "channel", "id", "prompt", "loss", "snr", "sisnr",
                                                      #  "snri", "sisnri"}
    module.test_results()                             # {"test/loss", "test/snr", "test/sisnr", "test/snri", …,
                                                      #  "{dataset}_test/{metric}", "{dataset}_test/{prompt}/{metric}"}
    module.output_hook = fn                           # optional, test only: fn(info, est, sample_rate) per item with
                                                      #  info = {"dataset", "manifest", "channel", "id", "prompts",
                                                      #  "sisnr" (one value per output)}
                                                      #  and est (s, n) float32 at the item's own rate, matched to
                                                      #  its references (e.g. to save separated audio)
    module.single_prompt = True                       # one forward per distinct prompt, repeats together
                                                      #  (eval.py --single_prompt: [speech, speech] then [sfx])
    module.css_conf / module.css_datasets             # chunk-wise inference settings (eval may override)

Batches (``datasets.fixed.collate_mixtures``): ``mix (b, n)``, ``refs (b, s, n)``, ``lengths (b,)``, ``prompts``,
``sample_rate``, and per-item ``dataset``/``id``/``manifest``/``channel`` lists. Training batches are already at
48 kHz; validation/test batches are at the manifest's rate and are processed one item at a time (lengths differ).

Metrics: the loss's permutation (same-prompt groups for TUSS, all outputs with ``pit_loss``) is applied, then SNR and
SI-SNR are computed per reference, and their improvements over the mixture (``snri = SNR(est, ref) - SNR(mix, ref)``,
``sisnri`` likewise; the mixture is the input at the item's own rate); records are gathered over DDP ranks and
aggregated by :func:`utils.metrics.aggregate_records` (``val/loss``, ``val/snr``, ``val/sisnr``, …: mean over datasets
of the per-dataset means; the conventional model's spare outputs count in its training loss but not in the records).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from datasets.dynamic_mixing import DynamicMixingDataset
from datasets.fixed import FixedDataset, collate_mixtures
from datasets.sampler import ShardSampler, SourceCountBatchSampler
from utils.audio import fix_length, resample
from utils.config import Config, ConfigError, load_config
from utils.losses import PITLoss, build_loss, prompt_groups
from utils.metrics import aggregate_records, si_snr, snr
from utils.settings import OPTIMIZERS, check_training_config

try:  # written in parallel (issue C); without it long recordings are separated in one pass
    from utils.css import css_forward
except ImportError:  # pragma: no cover - depends on the checkout
    css_forward = None

__all__ = ["SeparationModule", "NonFiniteTrainingError", "steps_per_epoch", "check_training_config", "OPTIMIZERS"]

log = logging.getLogger(__name__)

_DROPOUT_STREAM = 0x50D  # keeps the prompt-dropout draws independent of the other streams seeded from `seed`


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive training steps with a non-finite loss or gradient."""

def steps_per_epoch(config: Mapping) -> int:
    """Training steps per epoch and process: ``trainer_conf.limit_train_batches``, which must be an integer
    (dynamic mixing has no natural epoch; mixtures per epoch = steps x batch_size x world size)."""
    steps = (config.get("trainer_conf") or {}).get("limit_train_batches")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"trainer_conf.limit_train_batches must be a positive integer number of steps per epoch "
                          f"(dynamic mixing draws a fresh set each epoch), got {steps!r}")
    return steps


class ResumableLoader(DataLoader):
    """The training loader, resumable in the middle of an epoch (so Lightning knows it is).

    It needs no state of its own in the checkpoint: every mixture derives from (seed, epoch, rank, index), and
    :meth:`SeparationModule.train_dataloader` starts the sampler at the batch the restored loop progress says is
    next. ``state_dict``/``load_state_dict`` are Lightning's marker of a resumable loader.
    """

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        return None


def _ignore_stop_signals(worker_id: int) -> None:
    """Data-loader workers ignore SIGTERM/SIGUSR1: schedulers signal every process of a job, and the main process
    stops them itself after saving a checkpoint (utils.callbacks.PreemptionCheckpoint)."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


def _no_autocast(device: torch.device):
    """Resampling, losses and metrics run in float32 even inside a bf16 autocast region."""
    return torch.autocast(device_type=device.type, enabled=False)



class SeparationModule(pl.LightningModule):
    """Training/evaluation wrapper of a :class:`nets.SeparationModel` (see the module docstring).

    Args:
        config: experiment config (path, mapping or :class:`Config`) in the published hparams schema.
        model: an already built or loaded model (default: ``nets.build_model(config)``).
    """

    def __init__(self, config: str | Mapping, model: torch.nn.Module | None = None):
        super().__init__()
        self.config: Config = load_config(config)
        cfg = self.config
        if model is None:
            from nets import build_model

            model = build_model(cfg)
        self.model = model
        self.pit = PITLoss(build_loss(cfg.get("loss_func_name", "snr_with_zero_refs"), cfg.get("loss_func_conf")))
        self.pit_loss = bool(cfg.get("pit_loss", False))
        self.sort_prompts = bool(cfg.get("sort_prompts", False))
        self.p_prompt_dropout = float(cfg.get("p_prompt_dropout", 0.0) or 0.0)
        self.warmup_steps = int(cfg.get("warmup_steps", 0) or 0)
        self.keep_lr_epochs = int(cfg.get("keep_lr_epochs", 0) or 0)
        self.css_conf = dict(cfg.get("css_conf") or {})
        self.css_datasets = set(cfg.get("css_datasets") or ())
        self.single_prompt = False
        self.output_hook: Callable[[dict, torch.Tensor, int], None] | None = None
        names = getattr(model, "prompt_names", None) or tuple((cfg.get("prompts") or {}).keys())
        self._prompt_order = {p: i for i, p in enumerate(names)}
        self._records: dict[str, list[dict]] = {"val": [], "test": []}
        self.test_records: list[dict] = []
        self.test_metrics: dict[str, float] = {}
        self._warned_css = False
        self.max_nonfinite_steps = int(cfg.get("max_nonfinite_steps", 20) or 20)
        self.nonfinite_steps = 0
        self._nonfinite_in_row = 0
        self._last_batch: tuple | None = None
        # validation shards may be empty on some processes (ShardSampler pads them with skipped steps)
        self.allow_zero_length_dataloader_with_multiple_devices = True

    # ------------------------------------------------------------------------------------------------------------
    # separation

    @property
    def is_tuss(self) -> bool:
        return getattr(self.model, "prompt_names", None) is not None

    def forward(self, mix: torch.Tensor, prompts: Sequence[Sequence[str]] | None = None) -> torch.Tensor:
        """``(b, n)`` at 48 kHz -> ``(b, s, n)``; one forward per prompt when ``single_prompt`` is set."""
        if not self.is_tuss:
            return self.model(mix)
        if self.single_prompt:  # one forward per distinct prompt; repeats stay together ([speech, speech], [sfx])
            outs = []
            for i, item in enumerate(prompts):
                est = mix.new_zeros(len(item), mix.shape[-1])
                for name in dict.fromkeys(item):
                    idx = [j for j, p in enumerate(item) if p == name]
                    est[idx] = self.model(mix[i : i + 1], [[name] * len(idx)])[0].to(est.dtype)
                outs.append(est)
            return torch.stack(outs)
        return self.model(mix, prompts)

    def separate(self, mix: torch.Tensor, prompts: Sequence[Sequence[str]] | None, sample_rate: int,
                 dataset: str | None = None) -> torch.Tensor:
        """Separate ``(b, n)`` audio at ``sample_rate``: resample to the model's rate, run the model (chunk-wise for
        datasets in ``css_datasets``), resample back. Returns ``(b, s, n)`` float32 at ``sample_rate``."""
        n = mix.shape[-1]
        model_sr = int(getattr(self.model, "sample_rate", 48000))
        with _no_autocast(mix.device):
            x = resample(mix.float(), sample_rate, model_sr)
        if dataset in self.css_datasets:
            est = self._css(x, prompts, model_sr)
        else:
            est = self(x, prompts)
        with _no_autocast(mix.device):
            return fix_length(resample(est.float(), model_sr, sample_rate), n)

    def _css(self, x: torch.Tensor, prompts: Sequence[Sequence[str]] | None, model_sr: int) -> torch.Tensor:
        segment = round(float(self.css_conf.get("segment_size", 6)) * model_sr)  # seconds -> samples at 48 kHz
        shift = round(float(self.css_conf.get("shift_size", self.css_conf.get("segment_size", 6))) * model_sr)
        if x.shape[-1] <= segment:
            return self(x, prompts)
        if css_forward is None:
            if not self._warned_css:
                log.warning("utils.css is not available: long recordings are separated in one pass")
                self._warned_css = True
            return self(x, prompts)
        outs = []
        for i in range(x.shape[0]):  # segments of one recording form the CSS batch; items are separated one by one
            item_prompts = None if prompts is None else [list(prompts[i])]

            def forward_fn(seg: torch.Tensor, item_prompts=item_prompts) -> torch.Tensor:
                return self(seg, None if item_prompts is None else item_prompts * seg.shape[0])

            outs.append(css_forward(forward_fn, x[i : i + 1], segment, shift, batch_size=1,
                                    solve_perm=bool(self.css_conf.get("solve_perm", False)),
                                    prompts=item_prompts))
        return torch.cat(outs)

    # ------------------------------------------------------------------------------------------------------------
    # steps

    def _sorted(self, prompts: list[list[str]], refs: torch.Tensor) -> tuple[list[list[str]], torch.Tensor]:
        """Order each item's prompts (and references) by the model's prompt list."""
        order = [sorted(range(len(p)), key=lambda j, p=p: (self._prompt_order.get(p[j], len(self._prompt_order)),
                                                          p[j])) for p in prompts]
        index = torch.tensor(order, device=refs.device)
        return ([[p[j] for j in o] for p, o in zip(prompts, order, strict=True)],
                torch.gather(refs, 1, index[:, :, None].expand_as(refs)))

    def _prompt_dropout(self, prompts: list[list[str]], refs: torch.Tensor,
                        batch_idx: int = 0) -> tuple[list[list[str]], torch.Tensor]:
        """Drop, each with probability ``p_prompt_dropout``, the prompts that occur exactly once in every item (so
        every item keeps the same count), keeping at least one prompt; the dropped sources stay in the mixture.

        The draw depends on (seed, epoch, batch index, rank) only, so a resumed run drops what the uninterrupted
        run would have dropped."""
        candidates = [p for p in dict.fromkeys(prompts[0]) if all(item.count(p) == 1 for item in prompts)]
        rng = np.random.default_rng([int(self.config.get("seed", 0)), _DROPOUT_STREAM, self.current_epoch,
                                     int(batch_idx), self.global_rank])
        dropped = [p for p in candidates if rng.random() < self.p_prompt_dropout]
        if len(dropped) == len(prompts[0]):  # all prompts would go: keep one of them
            dropped.pop(int(rng.integers(len(dropped))))
        if not dropped:
            return prompts, refs
        keep = torch.tensor([[p not in dropped for p in item] for item in prompts], device=refs.device)
        b, _, n = refs.shape
        return [[p for p in item if p not in dropped] for item in prompts], refs[keep].view(b, -1, n)

    def _loss(self, est: torch.Tensor, refs: torch.Tensor, prompts: list[list[str]]):
        """Loss with the permutation that ``pit_loss`` allows: over all outputs (``pit_loss: true``), or only among
        outputs that share a prompt (``pit_loss: false``). For TUSS an output's prompt is the one it was asked for;
        for the conventional model output ``i`` carries the prompt of reference ``i`` -- with ``sort_prompts: true``
        (the release's conventional specialists) a fixed order of prompts (DnR: speech, sfxbg, musicbg) in which
        equal prompts (the two WHAM! speakers) may still swap; spare outputs (references padded with zeros) stay
        in place."""
        if self.pit_loss:
            groups = None
        else:
            groups = prompt_groups(prompts, est.device)
            spare = est.shape[1] - groups.shape[1]
            if spare > 0:  # conventional model: outputs without a reference, each in a group of its own
                extra = torch.arange(spare, device=est.device) + int(groups.max()) + 1
                groups = torch.cat([groups, extra.expand(groups.shape[0], -1)], dim=1)
        with _no_autocast(est.device):
            return self.pit(est.float(), refs.float(), groups)

    def _step(self, batch: dict | None, stage: str, batch_idx: int = 0) -> torch.Tensor | None:
        """One training, validation or test step (``stage`` is ``"train"``, ``"val"`` or ``"test"``)."""
        if batch is None:  # every item of the batch was unreadable (logged by the dataset)
            return None
        prompts = [list(p) for p in batch["prompts"]]
        refs = batch["refs"]
        if self.sort_prompts:
            prompts, refs = self._sorted(prompts, refs)
        if stage == "train":
            if self.p_prompt_dropout > 0:
                prompts, refs = self._prompt_dropout(prompts, refs, batch_idx)
            est = self(batch["mix"], prompts if self.is_tuss else None)
            res = self._loss(est, refs, prompts)
            b = refs.shape[0]
            self._last_batch = (batch.get("id"), batch.get("sources"), res.loss.detach())
            if torch.isfinite(res.loss):  # a non-finite loss is reported (and its step skipped) before the update
                self.log("train/loss", res.loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=b)
            self.log("train/num_src", float(refs.shape[1]), on_step=True, on_epoch=False, batch_size=b)
            return res.loss
        losses = []
        for i in range(refs.shape[0]):  # items differ in length and may need CSS: one at a time
            n = int(batch["lengths"][i])
            item_prompts = [prompts[i]]
            est = self.separate(batch["mix"][i : i + 1, :n], item_prompts if self.is_tuss else None,
                                int(batch["sample_rate"]), batch["dataset"][i])
            ref = refs[i : i + 1, :, :n]
            res = self._loss(est, ref, item_prompts)
            s = ref.shape[1]
            matched = res.est[0, :s].detach()
            with _no_autocast(est.device):
                target = ref[0].float()
                mixes = batch["mix"][i, :n].float().expand_as(target)  # the baseline: the mixture as every estimate
                snrs, sisnrs = snr(matched, target), si_snr(matched, target)
                snris, sisnris = snrs - snr(mixes, target), sisnrs - si_snr(mixes, target)
            info = {k: batch[k][i] for k in ("dataset", "manifest", "channel", "id")}
            for j, prompt in enumerate(item_prompts[0]):
                self._records[stage].append({**info, "prompt": prompt, "loss": float(res.per_source[0, j].detach()),
                                             "snr": float(snrs[j]), "sisnr": float(sisnrs[j]),
                                             "snri": float(snris[j]), "sisnri": float(sisnris[j])})
            if stage == "test" and self.output_hook is not None:
                self.output_hook({**info, "prompts": item_prompts[0], "sisnr": [float(v) for v in sisnrs]},
                                 matched.detach().cpu(), int(batch["sample_rate"]))
            losses.append(res.loss)
        return torch.stack(losses).mean()

    def on_train_epoch_start(self) -> None:
        # Lightning only sets the epoch of a DataLoader's sampler, not of a custom batch sampler: without this,
        # every epoch would draw the same mixtures (a resumed epoch's iterator already started in train_dataloader)
        sampler = getattr(self.trainer.train_dataloader, "batch_sampler", None)
        if callable(getattr(sampler, "set_epoch", None)) and sampler.epoch != self.current_epoch:
            sampler.set_epoch(self.current_epoch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        ids = (batch or {}).get("id") or []
        expected = f"e{self.current_epoch}-r{self.global_rank}-i{batch_idx * len(ids)}"
        if ids and ids[0] != expected:  # the sampler and the loop disagree on the position: never train on it
            raise RuntimeError(f"training batch {batch_idx} of epoch {self.current_epoch} holds mixture {ids[0]}, "
                               f"expected {expected} (data position lost on resume)")
        return self._step(batch, "train", batch_idx)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Skip the update of a step whose loss or gradient is not finite.

        The gradients (already reduced over DDP ranks, so every rank decides alike) are dropped, so the optimizer
        leaves every parameter and its state untouched; the step is counted (``train/nonfinite_steps``) and logged
        with the batch's mixtures and source files. ``max_nonfinite_steps`` consecutive skips stop the training
        with :class:`NonFiniteTrainingError`.
        """
        params = [p for p in self.parameters() if p.grad is not None]
        ids, sources, loss = self._last_batch if self._last_batch is not None else (None, None, None)
        finite = loss is None or bool(torch.isfinite(loss))
        if finite and params:
            finite = bool(torch.isfinite(torch.nn.utils.get_total_norm([p.grad for p in params])))
        if finite:
            self._nonfinite_in_row = 0
            return
        for p in params:
            p.grad = None
        self.nonfinite_steps += 1
        self._nonfinite_in_row += 1
        self.log("train/nonfinite_steps", float(self.nonfinite_steps), on_step=True, on_epoch=False, batch_size=1)
        files = sorted({f for item in (sources or []) for source in item for f in source})
        log.warning("step %d: non-finite %s; update skipped (%d in a row, %d in all); mixtures %s from %s",
                    self.global_step, "loss" if loss is not None and not torch.isfinite(loss) else "gradient",
                    self._nonfinite_in_row, self.nonfinite_steps, ids, ", ".join(files) or "unknown files")
        if self._nonfinite_in_row >= self.max_nonfinite_steps:
            raise NonFiniteTrainingError(
                f"{self._nonfinite_in_row} consecutive training steps had a non-finite loss or gradient (last at "
                f"step {self.global_step}, sources: {', '.join(files[:4]) or 'unknown'}); training stopped, the "
                f"checkpoints on disk are from before (max_nonfinite_steps: {self.max_nonfinite_steps})")

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor | None:
        return self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor | None:
        return self._step(batch, "test")

    # ------------------------------------------------------------------------------------------------------------
    # epoch ends: gather per-output records over ranks, aggregate, log

    def _gathered(self, stage: str) -> list[dict]:
        records, self._records[stage] = self._records[stage], []
        if self._trainer is not None and self.trainer.world_size > 1 and torch.distributed.is_initialized():
            parts: list[Any] = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(parts, records)
            records = [r for part in parts for r in part]
        return records

    def on_validation_epoch_start(self) -> None:
        self._records["val"] = []

    def on_validation_epoch_end(self) -> None:
        records = self._gathered("val")
        if self.trainer.sanity_checking or not records:
            return
        # every process holds the same gathered values: syncing averages identical numbers (and keeps Lightning quiet)
        self.log_dict(aggregate_records(records, "val"), sync_dist=self.trainer.world_size > 1)

    def on_test_epoch_start(self) -> None:
        self._records["test"] = []

    def on_test_epoch_end(self) -> None:
        self.test_records = self._gathered("test")
        self.test_metrics = aggregate_records(self.test_records, "test") if self.test_records else {}
        if self.test_metrics:
            self.log_dict(self.test_metrics, sync_dist=self.trainer.world_size > 1)

    def test_results(self) -> dict[str, float]:
        """Aggregated metrics of the last test run (see the module docstring for the keys)."""
        return dict(self.test_metrics)

    # ------------------------------------------------------------------------------------------------------------
    # optimisation

    @property
    def has_validation(self) -> bool:
        return bool(((self.config.get("dataset_conf") or {}).get("valid") or {}).get("json_path_and_num_data"))

    def configure_optimizers(self):
        cfg = self.config
        conf = dict(cfg.get("optimizer_conf") or {"lr": 1e-3})
        optimizer = OPTIMIZERS[cfg.get("optimizer_name", "adamw")](self.model.parameters(), **conf)
        if cfg.get("scheduler_name", "reducelr") is None or not self.has_validation:
            return optimizer
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min",
                                                               **dict(cfg.get("scheduler_conf") or {}))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss",
                                                         "interval": "epoch", "frequency": 1, "strict": False}}

    def lr_scheduler_step(self, scheduler, metric) -> None:
        """ReduceLROnPlateau on ``val/loss``, held off for the first ``keep_lr_epochs`` epochs."""
        if self.current_epoch < self.keep_lr_epochs or metric is None:
            return
        scheduler.step(metric)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """Linear warm-up: ``lr = base_lr * (step + 1) / warmup_steps`` for the first ``warmup_steps`` steps."""
        if self.warmup_steps > 0 and self.trainer.global_step < self.warmup_steps:
            base = float((self.config.get("optimizer_conf") or {}).get("lr", 1e-3))
            for group in optimizer.param_groups:
                group["lr"] = base * (self.trainer.global_step + 1) / self.warmup_steps
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

    # ------------------------------------------------------------------------------------------------------------
    # data

    def _rank_world(self) -> tuple[int, int]:
        if self._trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> DataLoader:
        cfg = self.config
        rank, world = self._rank_world()
        dataset = DynamicMixingDataset.from_config(cfg)
        steps, batch = steps_per_epoch(cfg), int(cfg.get("batch_size", 4))
        sampler = SourceCountBatchSampler(steps, batch, cfg["num_srcs_and_weights"], int(cfg.get("seed", 0)), rank,
                                          cfg["dataset_conf"]["train"].get("max_num_src"))
        epoch, done = self._resume_position(steps)
        sampler.set_epoch(epoch, done)
        if done and rank == 0:
            log.info("resuming epoch %d at batch %d of %d", epoch, done, steps)
        if rank == 0:
            log.info("training pools:\n%s", dataset.describe())
            log.info("mixtures per epoch: %d steps x batch %d x %d process(es) = %d", steps, batch, world,
                     steps * batch * world)
        workers = int(cfg.get("num_workers", 0))
        return ResumableLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate_mixtures,
                               persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                               worker_init_fn=_ignore_stop_signals if workers > 0 else None)

    def _resume_position(self, steps: int) -> tuple[int, int]:
        """``(epoch, batches already done in it)`` where the training loop will continue: ``(current_epoch, 0)`` for
        a fresh run; for a run restored from a checkpoint written in the middle of an epoch, the batches that
        epoch had finished (Lightning's restored progress), so the sampler skips exactly those."""
        if self._trainer is None:
            return 0, 0
        # a fresh run's progress is all zeros; a restored one holds the checkpoint's (whatever hook wrote it: a step's
        # end, validation's end, the epoch's end), so the position is read from it, not from `restarting`
        epoch = self.trainer.current_epoch  # epochs completed
        done = int(self.trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        if done >= steps:  # written at the end of an epoch: the next one starts afresh
            return epoch + 1, 0
        return epoch, max(done, 0)

    def _fixed_loaders(self, split: str) -> list[DataLoader]:
        cfg = self.config
        rank, world = self._rank_world()
        specs = ((cfg.get("dataset_conf") or {}).get(split) or {}).get("json_path_and_num_data") or []
        extra = tuple((cfg.get("model_conf") or {}).get("prompts") or ())
        loaders = []
        for spec in specs:
            if not isinstance(spec, (list, tuple)) or not 1 <= len(spec) <= 3:
                raise ConfigError(f"dataset_conf.{split}.json_path_and_num_data entries are [path, N or null, "
                                  f"(channel)], got {spec!r}")
            path, num = spec[0], spec[1] if len(spec) > 1 else None
            channel = spec[2] if len(spec) > 2 else 0
            ds = FixedDataset(path, num, channel, split=split, sort_by_length=split == "valid", prompts=extra)
            loaders.append(DataLoader(ds, batch_size=int(cfg.get("val_batch_size", 1)), collate_fn=collate_mixtures,
                                      sampler=ShardSampler(len(ds), rank, world),
                                      num_workers=min(int(cfg.get("num_workers", 0)), 2)))
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self._fixed_loaders("valid")

    def test_dataloader(self) -> list[DataLoader]:
        return self._fixed_loaders("test")

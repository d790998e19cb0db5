"""The Lightning module of TUSS (docs/architecture.md §11, §12): the training step, the evaluation step,
optimisation and logging. The one home of the training loop's logic; data comes from
:class:`training.data.SeparationDataModule`, settings from :class:`training.settings.TrainingSettings`.

Interface::

    module = SeparationModule(config)                 # builds the network with nets.build_model(config)
    module = SeparationModule(config, model=model)    # or wraps a loaded SeparationModel (eval: nets.load_model)
    module.model                                      # the network; checkpoint keys are model.separator.*
    est = module.separate(mix, prompts, sample_rate, dataset)   # (b, n) at any rate -> (b, s, n) at that rate
    trainer.fit(module, datamodule=SeparationDataModule(config, module.prompt_names))
    module.test_records                               # per output of every test item: {"dataset", "manifest",
                                                      #  "channel", "id", "prompt", "loss", "snr", "sisnr",
                                                      #  "snri", "sisnri"}
    module.test_results()                             # {"test/loss", "test/snr", …, "{dataset}_test/{metric}",
                                                      #  "{dataset}_test/{prompt}/{metric}"}
    module.output_hook = fn                           # test only: fn(info, est, sample_rate) per item (info =
                                                      #  {"dataset", "manifest", "channel", "id", "prompts",
                                                      #  "sisnr"}; est (s, n) float32 at the item's own rate,
                                                      #  matched to its references)
    module.single_prompt = True                       # one forward per distinct prompt (eval.py --single_prompt)
    module.metrics = ("pesq", "sdr")                  # test only: extra metrics per output (eval.py --metrics;
                                                      #  training.metrics.extra_scores), in the test records
    module.css_options / module.css_datasets          # chunk-wise inference settings (eval may override)

A ``.ckpt`` carries its config (``save_hyperparameters``: ``hyper_parameters["config"]``), so ``nets.load_model``
loads a lone checkpoint.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from nets import build_model
from separation.options import SeparationOptions
from separation.pipeline import separate_mixture
from training.finetune import freeze_parameters
from training.losses import PITLoss, build_loss, prompt_groups
from training.metrics import FUSS_DATASETS, aggregate_records, extra_scores, score
from training.settings import OPTIMIZERS, TrainingSettings, check_training_config
from utils.config import Config, load_config

__all__ = ["SeparationModule", "NonFiniteTrainingError", "check_training_config", "OPTIMIZERS"]

log = logging.getLogger(__name__)

_DROPOUT_STREAM = 0x50D  # keeps the prompt-dropout draws independent of the other streams seeded from `seed`


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive training steps with a non-finite loss or gradient."""


class SeparationModule(pl.LightningModule):
    """Training/evaluation wrapper of a :class:`nets.SeparationModel` (see the module docstring).

    Args:
        config: experiment config (path, mapping or :class:`Config`) in the published hparams schema.
        model: an already built or loaded model (default: ``nets.build_model(config)``).
    """

    def __init__(self, config: str | Mapping, model: torch.nn.Module | None = None):
        super().__init__()
        self.config: Config = load_config(config)
        self.save_hyperparameters({"config": self.config.to_dict()})
        self.settings = s = TrainingSettings.from_config(self.config)
        self.model = build_model(self.config) if model is None else model
        if model is None and s.freeze:  # fine-tuning: a resumed run freezes the same parameters (training/finetune.py)
            freeze_parameters(self.model, s.freeze)
            # a batch without any trainable parameter in its graph is skipped (training_step), as expected here
            warnings.filterwarnings("ignore", message=r"`training_step` returned `None`", category=UserWarning)
        self.pit = PITLoss(build_loss(s.loss_func_name, s.loss_func_conf))
        self.pit_loss, self.sort_prompts, self.p_prompt_dropout = s.pit_loss, s.sort_prompts, s.p_prompt_dropout
        self.css_datasets = set(s.css_datasets)
        #: chunk-wise settings of the datasets in ``css_datasets`` (``css_conf``; ``eval.py`` may replace them)
        self.css_options = SeparationOptions.from_css_conf(self.model, s.css_conf)
        self._one_pass = SeparationOptions.one_pass(self.css_options.model_rate)  # the other datasets
        self.single_prompt = False
        self.metrics: tuple[str, ...] = ()  # extra metrics of the test stage (eval.py --metrics), none by default
        self.output_hook: Callable[[dict, torch.Tensor, int], None] | None = None
        names = self.prompt_names or tuple((self.config.get("prompts") or {}).keys())
        self._prompt_order = {p: i for i, p in enumerate(names)}
        self._records: dict[str, list[dict]] = {"val": [], "test": []}
        self.test_records: list[dict] = []
        #: the test mixtures that could not be read (``{"skipped": id, "reason", "manifest"}``), of this process
        self.test_skipped: list[dict] = []
        self.test_metrics: dict[str, float] = {}
        self.nonfinite_steps = self._nonfinite_in_row = 0
        self._last_batch: tuple | None = None
        # validation shards may be empty on some processes (ShardSampler pads them with skipped steps)
        self.allow_zero_length_dataloader_with_multiple_devices = True

    # -- separation ------------------------------------------------------------------------------------------------
    @property
    def prompt_names(self) -> tuple[str, ...] | None:
        """The model's prompts (``None`` for the conventional model)."""
        return getattr(self.model, "prompt_names", None)

    @property
    def is_tuss(self) -> bool:
        return self.prompt_names is not None

    def forward(self, mix: torch.Tensor, prompts: Sequence[Sequence[str]] | None = None) -> torch.Tensor:
        """``(b, n)`` at 48 kHz -> ``(b, s, n)``; one forward per prompt when ``single_prompt`` is set."""
        if not self.is_tuss:
            return self.model(mix)
        if not self.single_prompt:
            return self.model(mix, prompts)
        outs = []  # one forward per distinct prompt; repeats stay together ([speech, speech], [sfx])
        for i, item in enumerate(prompts):
            est = mix.new_zeros(len(item), mix.shape[-1])
            for name in dict.fromkeys(item):
                idx = [j for j, p in enumerate(item) if p == name]
                est[idx] = self.model(mix[i : i + 1], [[name] * len(idx)])[0].to(est.dtype)
            outs.append(est)
        return torch.stack(outs)

    def separate(self, mix: torch.Tensor, prompts: Sequence[Sequence[str]] | None, sample_rate: int,
                 dataset: str | None = None) -> torch.Tensor:
        """Separate ``(b, n)`` audio at ``sample_rate`` through :func:`separation.pipeline.separate_mixture`,
        chunk-wise (:attr:`css_options`, from ``css_conf``: the shift defaults to the segment, the paper's protocol)
        for datasets in ``css_datasets``. Returns ``(b, s, n)`` float32 at ``sample_rate``."""
        options = self.css_options if dataset in self.css_datasets else self._one_pass
        outs = []
        for i in range(mix.shape[0]):  # the segments of one recording form a batch; recordings go one by one
            item_prompts = None if prompts is None else [list(prompts[i])]

            def forward_fn(x: torch.Tensor, item_prompts=item_prompts) -> torch.Tensor:
                return self(x, None if item_prompts is None else item_prompts * x.shape[0])

            outs.append(separate_mixture(forward_fn, mix[i : i + 1], sample_rate, options,
                                         prompts=None if item_prompts is None else item_prompts[0]))
        return torch.cat(outs)

    # -- the loss --------------------------------------------------------------------------------------------------
    def _sorted(self, prompts: list[list[str]], refs: torch.Tensor) -> tuple[list[list[str]], torch.Tensor]:
        """Order each item's prompts (and references) by the model's prompt list (``sort_prompts``)."""
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
        rng = np.random.default_rng([self.settings.seed, _DROPOUT_STREAM, self.current_epoch, int(batch_idx),
                                     self.global_rank])
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
        groups = None
        if not self.pit_loss:
            groups = prompt_groups(prompts, est.device)
            spare = est.shape[1] - groups.shape[1]
            if spare > 0:  # conventional model: outputs without a reference, each in a group of its own
                extra = torch.arange(spare, device=est.device) + int(groups.max()) + 1
                groups = torch.cat([groups, extra.expand(groups.shape[0], -1)], dim=1)
        with torch.autocast(device_type=est.device.type, enabled=False):  # losses in float32
            return self.pit(est.float(), refs.float(), groups)

    def _targets(self, batch: dict) -> tuple[list[list[str]], torch.Tensor]:
        prompts, refs = [list(p) for p in batch["prompts"]], batch["refs"]
        return self._sorted(prompts, refs) if self.sort_prompts else (prompts, refs)

    # -- steps -----------------------------------------------------------------------------------------------------
    def training_step(self, batch: dict | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None or "mix" not in batch:  # every item of the batch was unreadable (logged by the dataset)
            return None
        ids = batch.get("id") or []
        expected = f"e{self.current_epoch}-r{self.global_rank}-i{batch_idx * len(ids)}"
        if ids and ids[0] != expected:  # the sampler and the loop disagree on the position: never train on it
            raise RuntimeError(f"training batch {batch_idx} of epoch {self.current_epoch} holds mixture {ids[0]}, "
                               f"expected {expected} (data position lost on resume)")
        prompts, refs = self._targets(batch)
        if self.p_prompt_dropout > 0:
            prompts, refs = self._prompt_dropout(prompts, refs, batch_idx)
        res = self._loss(self(batch["mix"], prompts if self.is_tuss else None), refs, prompts)
        self._last_batch = (ids, batch.get("sources"), res.loss.detach())
        b = refs.shape[0]
        if torch.isfinite(res.loss):  # a non-finite loss is reported (and its step skipped) before the update
            self.log("train/loss", res.loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=b)
        self.log("train/num_src", float(refs.shape[1]), on_step=True, on_epoch=False, batch_size=b)
        if not res.loss.requires_grad:  # no trainable parameter in its graph (``freeze``: e.g. only a new prompt
            return None                 # trains, and no item of this batch has it): nothing to learn, no update
        return res.loss

    def _evaluate(self, batch: dict | None, stage: str) -> torch.Tensor | None:
        """Validation/test: each item separated at its own length and rate, scored per reference; the markers of
        unreadable items (``batch["skipped"]``) are kept for the test's report (:attr:`test_skipped`)."""
        if batch is None:
            return None
        if stage == "test":
            self.test_skipped.extend(batch.get("skipped") or [])
        if "mix" not in batch:  # every item of the batch was unreadable
            return None
        prompts, refs = self._targets(batch)
        losses = []
        for i in range(refs.shape[0]):  # items differ in length and may need CSS: one at a time
            n, sr = int(batch["lengths"][i]), int(batch["sample_rate"])
            mix, ref = batch["mix"][i : i + 1, :n], refs[i : i + 1, :, :n]
            est = self.separate(mix, [prompts[i]] if self.is_tuss else None, sr, batch["dataset"][i])
            res = self._loss(est, ref, [prompts[i]])
            matched = res.est[0, : ref.shape[1]].detach()
            # FUSS: a one-source item is scored by its absolute (SI-)SNR (training.metrics.score)
            scores = score(matched, ref[0], mix[0], absolute_single=batch["dataset"][i] in FUSS_DATASETS)
            extra = [{}] * ref.shape[1]  # the requested extra metrics: test stage only, none by default
            if stage == "test" and self.metrics:
                extra = extra_scores(matched.float(), ref[0].float(), sr, prompts[i], self.metrics)
            info = {k: batch[k][i] for k in ("dataset", "manifest", "channel", "id")}
            for j, prompt in enumerate(prompts[i]):
                self._records[stage].append({**info, "prompt": prompt, "loss": float(res.per_source[0, j]),
                                             **{k: float(v[j]) for k, v in scores.items()}, **extra[j]})
            if stage == "test" and self.output_hook is not None:
                self.output_hook({**info, "prompts": prompts[i], "sisnr": [float(v) for v in scores["sisnr"]]},
                                 matched.cpu(), sr)
            losses.append(res.loss)
        return torch.stack(losses).mean()

    def validation_step(self, batch: dict | None, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor | None:
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict | None, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor | None:
        return self._evaluate(batch, "test")

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
        limit = self.settings.max_nonfinite_steps
        if self._nonfinite_in_row >= limit:
            raise NonFiniteTrainingError(
                f"{self._nonfinite_in_row} consecutive training steps had a non-finite loss or gradient (last at "
                f"step {self.global_step}, sources: {', '.join(files[:4]) or 'unknown'}); training stopped, the "
                f"checkpoints on disk are from before (max_nonfinite_steps: {limit})")

    def on_train_epoch_start(self) -> None:
        # Lightning only sets the epoch of a DataLoader's sampler, not of a custom batch sampler: without this,
        # every epoch would draw the same mixtures (a resumed epoch's iterator already started in train_dataloader)
        sampler = getattr(self.trainer.train_dataloader, "batch_sampler", None)
        if callable(getattr(sampler, "set_epoch", None)) and sampler.epoch != self.current_epoch:
            sampler.set_epoch(self.current_epoch)

    # -- epoch ends: gather per-output records over ranks, aggregate, log -------------------------------------------
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
        self.test_skipped = []

    def on_test_epoch_end(self) -> None:
        self.test_records = self._gathered("test")
        self.test_metrics = aggregate_records(self.test_records, "test") if self.test_records else {}
        if self.test_metrics:
            self.log_dict(self.test_metrics, sync_dist=self.trainer.world_size > 1)

    def test_results(self) -> dict[str, float]:
        """Aggregated metrics of the last test run (see the module docstring for the keys)."""
        return dict(self.test_metrics)

    # -- optimisation ----------------------------------------------------------------------------------------------
    @property
    def has_validation(self) -> bool:
        return bool(((self.config.get("dataset_conf") or {}).get("valid") or {}).get("json_path_and_num_data"))

    def configure_optimizers(self):
        s = self.settings
        trainable = [p for p in self.model.parameters() if p.requires_grad]  # frozen ones stay out (``freeze``)
        optimizer = OPTIMIZERS[s.optimizer_name](trainable, **dict(s.optimizer_conf))
        if s.scheduler_name is None or not self.has_validation:
            return optimizer
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", **dict(s.scheduler_conf))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss",
                                                         "interval": "epoch", "frequency": 1, "strict": False}}

    def lr_scheduler_step(self, scheduler, metric) -> None:
        """ReduceLROnPlateau on ``val/loss``, held off for the first ``keep_lr_epochs`` epochs."""
        if self.current_epoch < self.settings.keep_lr_epochs or metric is None:
            return
        scheduler.step(metric)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """Linear warm-up: ``lr = base_lr * (step + 1) / warmup_steps`` for the first ``warmup_steps`` steps."""
        warmup = self.settings.warmup_steps
        if warmup > 0 and self.trainer.global_step < warmup:
            for group in optimizer.param_groups:
                group["lr"] = self.settings.lr * (self.trainer.global_step + 1) / warmup
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

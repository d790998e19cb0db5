"""The Lightning module: steps, resampling around the model, test records/results, prompt dropout and sorting,
warm-up and the held-off plateau scheduler, config checks."""

import logging
from collections import Counter

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from datasets.synthetic import synthetic_overrides, write_synthetic_corpus
from training.callbacks import quiet_lightning
from training.data import SeparationDataModule
from training.metrics import aggregate_records, snr
from training.module import SeparationModule, check_training_config
from training.run import build_trainer
from utils.audio import resample
from utils.config import ConfigError, apply_overrides, load_config

PROMPTS = ("speech", "sfx", "sfxbg", "drums", "bass", "vocals", "other", "musicbg")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_synthetic_corpus(tmp_path_factory.mktemp("corpus"), files_per_prompt=2)


def tiny(corpus, kind="tuss", **overrides):
    cfg = load_config(f"configs/tests/tiny.{kind}.yaml")
    apply_overrides(cfg, synthetic_overrides(corpus))
    apply_overrides(cfg, overrides)
    return cfg


class HalfMix(nn.Module):
    """Stub TUSS-like model: every output is half the mixture; records the input lengths and prompts it saw."""

    prompt_names = PROMPTS
    sample_rate = 48000
    window_samples = 2048  # one STFT window, as the options check a chunk size against (docs/architecture.md §10)

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.calls = []

    def forward(self, mix, prompts=None):
        self.calls.append((mix.shape[-1], prompts))
        return self.scale * mix[:, None].expand(-1, len(prompts[0]), -1)


# training_step runs here without a Trainer: its self.log() calls are skipped, with Lightning's warning saying so
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)` but the `self.trainer` reference:UserWarning")
def test_train_step_tuss_and_conventional(corpus, caplog):
    for kind, outputs in (("tuss", None), ("conventional", 3)):
        torch.manual_seed(0)
        module = SeparationModule(tiny(corpus, kind))
        with caplog.at_level(logging.INFO):
            loader = SeparationDataModule(tiny(corpus, kind)).train_dataloader()
        assert "mixtures per epoch: 2 steps x batch 2 x 1 process(es) = 4" in caplog.text
        assert len(loader) == 2
        batch = next(iter(loader))
        s = batch["refs"].shape[1]
        assert batch["mix"].shape == (2, 24000) and batch["refs"].shape == (2, s, 24000) and s in (2, 3)
        loss = module.training_step(batch, 0)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        grads = [p.grad for p in module.model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        est = module(batch["mix"], batch["prompts"] if kind == "tuss" else None)
        assert est.shape[1] == (outputs or s)


def test_validation_resamples_to_model_rate_and_back(corpus):
    stub = HalfMix()
    module = SeparationModule(tiny(corpus), model=stub)
    loader = SeparationDataModule(tiny(corpus)).val_dataloader()[0]  # fixed.json: 16 kHz, speech + sfxbg
    batch = next(iter(loader))
    n = int(batch["lengths"][0])
    with torch.no_grad():  # as Lightning runs validation
        loss = module.validation_step(batch, 0)
    assert stub.calls[0][0] == 3 * n  # the model saw 48 kHz
    records = module._records["val"]
    assert [r["prompt"] for r in records] == ["speech", "sfxbg"] and torch.isfinite(loss)
    round_trip = resample(resample(batch["mix"][0, :n], 16000, 48000), 48000, 16000)[:n]
    expected = snr(0.5 * round_trip.expand(2, n), batch["refs"][0, :, :n])
    assert [r["snr"] for r in records] == pytest.approx(expected.tolist(), abs=1e-4)
    assert records[0]["dataset"] == "vctk_demand" and records[0]["manifest"] == "fixed"


def test_css_datasets_are_separated_chunk_wise(corpus):
    stub = HalfMix()
    module = SeparationModule(tiny(corpus), model=stub)  # css_datasets [dnr]: 0.5 s segments every 0.25 s
    batch = next(iter(SeparationDataModule(tiny(corpus)).val_dataloader()[1]))  # fixed_css.json (dnr), 44.1 kHz
    n = int(batch["lengths"][0])
    with torch.no_grad():  # as in validation and test
        est = module.separate(batch["mix"][:, :n], batch["prompts"], 44100, "dnr")
    n48 = round(n * 48000 / 44100)
    assert [c[0] for c in stub.calls] == [24000] * (-(-(n48 - 24000) // 12000) + 1)
    assert all(c[1] == [batch["prompts"][0]] for c in stub.calls)
    stub.calls.clear()
    with torch.no_grad():
        whole = module.separate(batch["mix"][:, :n], batch["prompts"], 44100, "vctk_demand")  # not a CSS dataset
    assert [c[0] for c in stub.calls] == [n48] and est.shape == whole.shape == (1, 3, n)
    torch.testing.assert_close(est, whole, atol=1e-5, rtol=1e-5)  # a linear "model": overlap-add is exact


def test_single_prompt_runs_one_forward_per_distinct_prompt():
    """``speech speech sfx`` runs ``[speech, speech]`` then ``[sfx]`` (repeats stay together); items one by one."""
    stub = HalfMix()
    module = SeparationModule(load_config("configs/tests/tiny.tuss.yaml"), model=stub)
    module.single_prompt = True
    mix = torch.randn(2, 100)
    out = module(mix, [["speech", "speech", "sfx"], ["drums", "bass", "drums"]])
    assert out.shape == (2, 3, 100)
    assert [c[1] for c in stub.calls] == [[["speech", "speech"]], [["sfx"]], [["drums", "drums"]], [["bass"]]]
    torch.testing.assert_close(out, 0.5 * mix[:, None].expand(-1, 3, -1))


def test_test_results_records_and_output_hook(corpus, tmp_path):
    torch.manual_seed(0)
    module = SeparationModule(tiny(corpus))
    saved = []
    module.output_hook = lambda info, est, sr: saved.append((info, tuple(est.shape), sr))
    quiet_lightning()  # as train.py and eval.py: not the deprecation warning Lightning's own code raises in torch 2.11
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.test(module, datamodule=SeparationDataModule(tiny(corpus)), verbose=False)
    results = module.test_results()
    assert {"test/loss", "test/snr", "test/sisnr", "vctk_demand_test/speech/snr", "vctk_demand_test/sfxbg/loss",
            "dnr_test/musicbg/sisnr", "dnr_test/loss"} <= set(results)
    assert len(module.test_records) == 3 * 2 + 3 * 3
    assert results == pytest.approx(aggregate_records(module.test_records, "test"), nan_ok=True)
    assert results["test/loss"] == pytest.approx((results["vctk_demand_test/loss"] + results["dnr_test/loss"]) / 2)
    assert len(saved) == 6
    by_sr = Counter((shape[0], sr) for _, shape, sr in saved)
    assert by_sr == {(2, 16000): 3, (3, 44100): 3}
    info = next(i for i, _, sr in saved if sr == 44100)
    assert len(info["sisnr"]) == 3 and all(isinstance(v, float) for v in info["sisnr"])
    assert info["channel"] == 1 and info["prompts"] == ["speech", "sfxbg", "musicbg"]
    lengths = {i["id"]: shape[1] for i, shape, _ in saved}
    assert lengths["fixed_css_test_0"] == round(0.75 * 44100)  # output length = input length (CSS or not)


def coded_refs(prompts):
    """References whose constant value encodes their prompt, to check they stay aligned."""
    return torch.tensor([[[float(PROMPTS.index(p))] * 4 for p in item] for item in prompts])


def test_prompt_dropout_drops_only_prompts_present_once_in_every_item(corpus):
    module = SeparationModule(tiny(corpus, p_prompt_dropout="0.5"), model=HalfMix())
    prompts = [["speech", "sfx", "musicbg"], ["musicbg", "speech", "sfxbg"]]
    kept, n = Counter(), 2000
    for i in range(n):
        out, refs = module._prompt_dropout(prompts, coded_refs(prompts), batch_idx=i)
        assert module._prompt_dropout(prompts, coded_refs(prompts), batch_idx=i)[0] == out  # resumable draw
        assert len({len(p) for p in out}) == 1 and len(out[0]) >= 1
        assert torch.equal(refs, coded_refs(out))  # references follow their prompts
        kept.update(p for p in out[0])
        assert "sfx" in out[0]  # not in every item: never dropped
    for p in ("speech", "musicbg"):
        assert abs(kept[p] / n - 0.5) < 0.05
    repeated = [["speech", "speech"], ["speech", "speech"]]
    assert module._prompt_dropout(repeated, coded_refs(repeated))[0] == repeated  # twice in an item: never
    module.p_prompt_dropout = 0.95
    single = [["drums"], ["drums"]]
    assert all(module._prompt_dropout(single, coded_refs(single), batch_idx=i)[0] == single  # one is kept
               for i in range(50))


def test_sort_prompts_orders_by_model_prompt_list(corpus):
    module = SeparationModule(tiny(corpus, sort_prompts="true"), model=HalfMix())
    prompts = [["musicbg", "speech", "sfx"], ["bass", "drums", "speech"]]
    out, refs = module._sorted(prompts, coded_refs(prompts))
    assert out == [["speech", "sfx", "musicbg"], ["speech", "drums", "bass"]]
    assert torch.equal(refs, coded_refs(out))


class LrRecorder(pl.Callback):
    def __init__(self):
        self.lrs, self.ids = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.ids.append(batch["id"][0])


def test_warmup_and_plateau_scheduler_held_off(corpus, tmp_path):
    cfg = tiny(corpus, warmup_steps="3", keep_lr_epochs="2", **{"trainer_conf.max_epochs": "3",
                                                                "trainer_conf.enable_progress_bar": "false"})
    torch.manual_seed(0)
    module = SeparationModule(cfg)
    recorder = LrRecorder()
    trainer = build_trainer(cfg, tmp_path / "exp", [recorder])
    trainer.fit(module, datamodule=SeparationDataModule(cfg))
    assert recorder.lrs == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3, 1e-3, 1e-3])
    # Lightning sets the batch sampler's epoch: each epoch draws new mixtures
    assert recorder.ids == ["e0-r0-i0", "e0-r0-i2", "e1-r0-i0", "e1-r0-i2", "e2-r0-i0", "e2-r0-i2"]
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert scheduler.last_epoch == 1  # epochs 0 and 1 held off, stepped after epoch 2 only
    assert scheduler.best == pytest.approx(float(trainer.callback_metrics["val/loss"]))
    assert (tmp_path / "exp" / "checkpoints" / "last.ckpt").is_file()


def test_config_checks_name_the_key():
    base = load_config("configs/unified/tuss.large.2-4src.promptdropout.yaml")
    check_training_config(base)
    cases = [({"prompt_dropout": True}, "p_prompt_dropout"), ({"p_prompt_dropout": 1.5}, "p_prompt_dropout"),
             ({"optimizer_name": "sgd"}, "optimizer_name"), ({"dynamic_mixing": False}, "dynamic_mixing"),
             ({"loss_func_name": "sdr"}, "loss_func_name"),
             ({"trainer_conf": {**base.trainer_conf, "limit_train_batches": 1.0}}, "limit_train_batches")]
    for change, key in cases:
        cfg = load_config(base)
        cfg.update(change)
        with pytest.raises(ConfigError, match=key):
            check_training_config(cfg)


class FixedOutputs(nn.Module):
    """Stub conventional model (no prompts): returns the estimates it is given, with spare outputs of zeros."""

    prompt_names = None
    sample_rate = 48000
    window_samples = 2048

    def __init__(self, est):
        super().__init__()
        self.est = est

    def forward(self, mix, prompts=None):
        return self.est


@pytest.mark.parametrize("pit_loss", ["false", "true"])
def test_conventional_permutations_follow_pit_loss(corpus, pit_loss):
    """pit_loss false (the release's conventional specialists): a fixed order across prompts, swaps only among equal
    prompts; pit_loss true: any permutation."""
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(1, 4000, generator=g) for _ in range(3))
    refs = torch.stack([a, b, c], dim=1)  # speech, speech, sfxbg
    zero = torch.zeros_like(a)

    def loss(order, prompts):
        est = torch.stack([[a, b, c][i] for i in order] + [zero], dim=1)  # 4 outputs, the last spare
        module = SeparationModule(tiny(corpus, "conventional", pit_loss=pit_loss), model=FixedOutputs(est))
        return float(module._loss(est, refs, prompts).loss)

    prompts = [["speech", "speech", "sfxbg"]]
    best = loss([0, 1, 2], prompts)
    assert loss([1, 0, 2], prompts) == pytest.approx(best)  # the two speakers may swap either way
    across = loss([2, 1, 0], prompts)  # sfxbg output on the speech reference
    if pit_loss == "true":
        assert across == pytest.approx(best)
    else:
        assert across > best + 10

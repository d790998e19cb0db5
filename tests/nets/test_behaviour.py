"""Forward/backward behaviour of the networks: prompts, batches, block orders, errors, loading checks."""

import pytest
import torch

from nets import ModelLoadError, PromptError, build_model, load_model, load_weights, locoformer, onednn
from nets.band_split import BandSplit, band_widths
from nets.locoformer import SwiGLUConvDeconv
from nets.paths import fused_mode
from tests.helpers import load_fixture, tiny_tuss_hparams, write_published_layout
from utils.checkpoint import CheckpointError

N = 9_001  # odd length: the output must be trimmed to exactly this


def _tiny(**model_conf):
    torch.manual_seed(0)
    return build_model(tiny_tuss_hparams(**model_conf))


def test_band_table_at_48k():
    widths = band_widths(48000, 2048)
    assert widths == [2] * 22 + [4] * 11 + [12] * 8 + [24] * 8 + [48] * 8 + [66, 66, 66, 67]
    assert sum(widths) == 1025
    w44 = band_widths(44100, 2048)  # other rates: the rest above 16 kHz is split in two bands
    assert sum(w44) == 1025 and w44[-2:] == [128, 129]
    with pytest.raises(ValueError, match="sample_rate 16000 / stft_size 512 leave no bins above 16 kHz"):
        band_widths(16000, 512)


@pytest.mark.parametrize("prompts", [["speech"], ["speech", "sfx"], ["sfx", "sfx", "sfx"],
                                     ["drums", "bass", "vocals", "other"]])
def test_forward_backward_prompt_counts(prompts):
    model = _tiny()
    mix = torch.randn(1, N)
    out = model(mix, [prompts])
    assert out.shape == (1, len(prompts), N)
    out.square().mean().backward()
    grads = {name: p.grad for name, p in model.separator.prompts.items()}
    for name, grad in grads.items():
        used = name in prompts
        assert (grad is not None and grad.abs().sum() > 0) == used, name
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_batch_items_with_different_prompts_match_single_calls():
    model = _tiny().eval()
    mix = torch.randn(2, N)
    prompts = [["speech", "sfx", "musicbg"], ["drums", "drums", "sfxbg"]]
    with torch.no_grad():
        both = model(mix, prompts)
        for i in range(2):
            torch.testing.assert_close(both[i : i + 1], model(mix[i : i + 1], [prompts[i]]), rtol=1e-4, atol=1e-5)


def test_repeated_prompts_give_distinct_outputs():
    """``sfx sfx sfx``: the prompt tokens sit at different rotary positions, so each copy can extract a different
    source (what lets TUSS separate several effects); the outputs must not collapse to one."""
    model = _tiny().eval()
    with torch.no_grad():
        out = model(torch.randn(1, N), [["sfx", "sfx", "sfx"]])
    assert out.shape == (1, 3, N)
    for i, j in [(0, 1), (1, 2), (0, 2)]:
        assert (out[:, i] - out[:, j]).abs().max() > 1e-3 * out.abs().max()


@pytest.mark.parametrize("tf_order", ["ft", "tf"])
@pytest.mark.parametrize("use_sos_token", [True, False])
def test_tf_orders_and_sos_token(tf_order, use_sos_token):
    hp = tiny_tuss_hparams(use_sos_token=use_sos_token)
    for key in ("conf_cross_prompt_module", "conf_cond_tse_module"):
        hp["model_conf"][key]["tf_order"] = tf_order
    model = build_model(hp)
    assert hasattr(model.separator, "sos_token") == use_sos_token
    mix = torch.randn(2, N)
    out = model(mix, [["speech", "sfxbg"], ["vocals", "other"]])
    assert out.shape == (2, 2, N)
    out.abs().mean().backward()
    assert model.separator.cross_prompt_module[0].frame_path.attn.qkv.weight.grad.abs().sum() > 0


def test_tf_order_changes_the_computation():
    a = _tiny().eval()
    hp = tiny_tuss_hparams()
    hp["model_conf"]["conf_cond_tse_module"]["tf_order"] = "tf"
    b = build_model(hp).eval()
    b.load_state_dict(a.state_dict())
    mix = torch.randn(1, N)
    with torch.no_grad():
        assert not torch.allclose(a(mix, [["speech"]]), b(mix, [["speech"]]))


@pytest.mark.parametrize("num_spk", [2, 3, 4])
def test_conventional_model_outputs(num_spk):
    hp = load_fixture("conventional")["hparams"]
    hp["model_conf"]["num_spk"] = num_spk
    model = build_model(hp)
    out = model(torch.randn(2, N))
    assert out.shape == (2, num_spk, N)
    out.square().mean().backward()
    assert model.separator.band_split_module.bandwise_decoding_module[0][5].weight.grad.abs().sum() > 0


def test_callers_tensor_is_not_modified_and_scale_follows_input():
    model = _tiny().eval()
    mix = torch.randn(1, N)
    keep = mix.clone()
    with torch.no_grad():
        out = model(mix, [["speech", "sfx"]])
        out_scaled = model(mix * 7.0, [["speech", "sfx"]])
    assert torch.equal(mix, keep)
    torch.testing.assert_close(out_scaled, out * 7.0, rtol=1e-4, atol=1e-5)  # variance normalisation


@pytest.mark.parametrize(("kernel", "shift"), [(1, 1), (3, 1), (4, 1), (3, 2), (4, 2)])
def test_ffn_gemm_path_equals_convolutions(kernel, shift):
    torch.manual_seed(1)
    ffn = SwiGLUConvDeconv(8, 12, kernel, shift)
    x = torch.randn(3, 17, 8)
    k, s, length = kernel, shift, 17
    # reference straight from the specification (docs/architecture.md §4), channels first
    left = k - s
    padded = -(-(length + 2 * left - k) // s) * s + k
    xp = torch.nn.functional.pad(x.transpose(1, 2), (left, padded - length - left))
    a, g = ffn.conv1d(xp).chunk(2, dim=1)
    ref = ffn.deconv1d(a * torch.nn.functional.silu(g))[..., left : left + length].transpose(1, 2)
    torch.testing.assert_close(ffn(x), ref, rtol=1e-5, atol=1e-5)  # autograd path
    with torch.no_grad():
        torch.testing.assert_close(ffn(x), ref, rtol=1e-5, atol=1e-5)  # in-place inference path (train mode)
        torch.testing.assert_close(ffn.eval()(x), ref, rtol=1e-5, atol=1e-5)  # fused oneDNN path where there is one


def test_inference_and_training_paths_agree_on_the_whole_model():
    model = _tiny()
    model.train(False)  # dropout is 0 anyway; only the autograd mode differs between the two calls
    mix = torch.randn(2, N)
    prompts = [["speech", "sfx"], ["bass", "sfxbg"]]
    with_grad = model(mix, prompts)
    with torch.inference_mode():
        without = model(mix, prompts)
    torch.testing.assert_close(with_grad.detach(), without, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(onednn.LINEAR is None, reason="this torch has no oneDNN fused linear op")
def test_fused_inference_path_is_taken_and_equals_the_plain_one(monkeypatch):
    model = _tiny().eval()
    mix = torch.randn(2, N)
    prompts = [["speech", "sfx", "sfx"], ["bass", "sfxbg", "musicbg"]]
    calls = []
    op = onednn.LINEAR

    class Counting:  # the real op, counted
        def __call__(self, *args):
            calls.append(args[3])
            return op(*args)

        def binary(self, *args):
            calls.append(args[4])
            return op.binary(*args)

    monkeypatch.setattr(onednn, "LINEAR", Counting())
    with torch.inference_mode():
        fused = model(mix, prompts)
    attention_layers = sum(isinstance(m, locoformer.MultiHeadSelfAttention) for m in model.modules())
    ffns = sum(isinstance(m, SwiGLUConvDeconv) for m in model.modules())
    bands = sum(len(m.widths) for m in model.modules() if isinstance(m, BandSplit))
    assert calls.count("swish") == ffns  # FFN gate GEMM with SiLU inside
    assert calls.count("tanh") == 2 * bands and calls.count("sigmoid") == bands  # decoder layers, GLU gate
    assert calls.count("mul") == ffns + bands  # FFN value GEMM times its gate; decoder GLU value times its gate
    assert calls.count("add") == attention_layers  # output projection plus the residual
    calls.clear()
    with torch.inference_mode():
        plain = model.set_fused(False)(mix, prompts)  # the plain path (what TUSS_ONEDNN=0 gives)
    assert calls == []
    assert (fused - plain).abs().max() / plain.abs().max() < 1e-5
    model.set_fused(None)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(mix, prompts)
    model.train()
    with torch.inference_mode():
        model(mix, prompts)
    assert calls == []  # neither under autocast nor in train mode (dropout)


@pytest.mark.skipif(onednn.LINEAR is None, reason="this torch has no oneDNN fused linear op")
def test_fused_path_follows_every_change_of_the_weights():
    """The fused path lays its weights out anew on each call (nets.onednn.in_major): whatever changes them, by
    load_state_dict, an in-place edit or one through ``.data`` (which no version counter sees), it uses the new ones;
    weights made under inference_mode (inference tensors) work too."""
    mix = torch.randn(1, N)
    prompts = [["speech", "sfx"]]

    def both(model) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            fused = model.set_fused(True)(mix, prompts)
            plain = model.set_fused(False)(mix, prompts)
        model.set_fused(None)
        return fused, plain

    def close(pair) -> bool:
        fused, plain = pair
        return bool((fused - plain).abs().max() / plain.abs().max() < 1e-5)

    model = _tiny().eval()
    first, _ = both(model)
    torch.manual_seed(5)
    model.load_state_dict(build_model(tiny_tuss_hparams()).state_dict())  # other weights, copied in place
    pair = both(model)
    assert close(pair) and (pair[0] - first).abs().max() / first.abs().max() > 0.1
    ffn = model.separator.cond_tse_module[0].freq_path.ffn[0]
    with torch.no_grad():
        ffn.conv1d.weight.mul_(3.0)
    assert close(both(model))
    before = both(model)[0]
    ffn.deconv1d.weight.data.mul_(0.5)
    model.separator.cross_prompt_module[0].frame_path.attn.qkv.weight.data.mul_(2.0)
    pair = both(model)
    assert close(pair) and not torch.allclose(pair[0], before)
    with torch.inference_mode():
        made_here = _tiny().eval()
    assert made_here.separator.sos_token.is_inference()
    assert close(both(made_here))


@pytest.mark.parametrize(("env", "available"), [("0", False), ("off", False), ("1", True)])
def test_fused_path_opt_out(monkeypatch, env, available):
    monkeypatch.setenv("TUSS_ONEDNN", env)
    assert (fused_mode(None) is not False) == (available and onednn.LINEAR is not None)
    assert (_tiny().paths.fused is not False) == (available and onednn.LINEAR is not None)  # read when built


def test_prompt_errors():
    model = _tiny()
    mix = torch.randn(2, N)
    with pytest.raises(PromptError, match=r"unknown prompt\(s\) piano; this model knows: speech, sfx"):
        model(mix, [["speech", "piano"], ["speech", "sfx"]])
    with pytest.raises(PromptError, match="same non-zero number of prompts"):
        model(mix, [["speech", "sfx"], ["speech"]])
    with pytest.raises(PromptError, match="list of 2 prompt lists"):
        model(mix, [["speech"]])


def test_custom_prompt_names():
    model = _tiny(prompts=["speech", "piano"])
    assert model.prompt_names == ("speech", "piano")
    assert model(torch.randn(1, N), [["piano"]]).shape == (1, 1, N)


def test_strict_loading_names_the_key(tmp_path):
    fx = load_fixture("tuss")
    model = build_model(fx["hparams"])
    sd = dict(fx["state_dict"])
    sd.pop("model.separator.prompts.bass")
    with pytest.raises(ModelLoadError, match=r"1 missing key\(s\): separator.prompts.bass"):
        load_weights(model, sd)
    sd = dict(fx["state_dict"], **{"model.separator.extra": torch.zeros(1)})
    with pytest.raises(ModelLoadError, match=r"unexpected key\(s\): separator.extra"):
        load_weights(model, sd)
    sd = dict(fx["state_dict"])
    sd["model.separator.sos_token"] = torch.zeros(17, 1, 1)
    with pytest.raises(ModelLoadError, match=r"shape mismatch: separator.sos_token \(checkpoint \(17, 1, 1\)"):
        load_weights(model, sd)
    # the same through load_model from disk, naming the checkpoint
    ckpt = write_published_layout(tmp_path / "m", fx["hparams"], sd)
    with pytest.raises(ModelLoadError, match="model.pth does not fit its config"):
        load_model(ckpt)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model(tmp_path / "nope.pth")
    lone = tmp_path / "lone" / "checkpoints" / "model.pth"
    lone.parent.mkdir(parents=True)
    torch.save(load_fixture("tuss")["state_dict"], lone)
    with pytest.raises(CheckpointError, match="no hparams.yaml for checkpoint"):
        load_model(lone)
    bad = tmp_path / "bad" / "checkpoints" / "model.pth"
    write_published_layout(tmp_path / "bad", load_fixture("tuss")["hparams"], {"x": torch.zeros(1)})
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a loadable torch checkpoint"):
        load_model(bad)


def test_checkpoint_cannot_run_code(tmp_path):
    """A pickle that would execute code is refused (weights_only loading)."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "m" / "checkpoints" / "model.pth"
    write_published_layout(tmp_path / "m", load_fixture("tuss")["hparams"], {"x": torch.zeros(1)})
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Evil()}, f, protocol=2)  # torch.save's protocol: refused for the code alone
    with pytest.raises(CheckpointError, match="not a loadable torch checkpoint"):
        load_model(path)


def test_bf16_autocast_stays_close_to_fp32():
    """Mixed precision (as in training with ``precision: bf16-mixed``): float32 output close to the fp32 result."""
    model = _tiny().eval()
    mix = torch.randn(1, N)
    with torch.no_grad():
        ref = model(mix, [["speech", "sfx"]])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(mix, [["speech", "sfx"]])
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()

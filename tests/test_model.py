"""The network: stock mode equals transformers' Mllama; MOSS-mode specifics; streaming equals offline."""

import dataclasses

import pytest
import torch
from safetensors.torch import save_file

import engine.config as C
from engine import load_model
from engine.decoder import rope_cos_sin, rotate
from engine.loading import LoadError, save_model
from engine.model import Model

transformers = pytest.importorskip("transformers")


def hf_tiny(intermediate=(1, 3), max_num_tiles=1):
    from transformers import MllamaConfig

    vision = dict(
        hidden_size=32,
        num_hidden_layers=4,
        num_global_layers=2,
        attention_heads=2,
        intermediate_size=64,
        vision_output_dim=96,
        image_size=28,
        patch_size=14,
        max_num_tiles=max_num_tiles,
        supported_aspect_ratios=[[1, 1]],
        intermediate_layers_indices=list(intermediate),
    )
    text = dict(
        vocab_size=320,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        cross_attention_layers=[1, 3],
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return MllamaConfig(vision_config=vision, text_config=text, image_token_index=320)


def make_hf(tmp_path, intermediate=(1, 3), old_keys=False):
    from transformers import MllamaForConditionalGeneration

    torch.manual_seed(0)
    hf = MllamaForConditionalGeneration(hf_tiny(intermediate)).eval()
    with torch.no_grad():  # open the tanh gates (they start at 0, which would hide cross-attention)
        for n, p in hf.named_parameters():
            if "gate" in n:
                p.fill_(0.7)
            elif n.endswith("norm.weight") or "layernorm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(tmp_path)
    if old_keys:  # rewrite the weights in the transformers <= 4.51 spelling
        sd = hf.state_dict()
        old = {}
        for k, v in sd.items():
            k = k.replace("model.vision_model.", "vision_model.")
            k = k.replace("model.multi_modal_projector.", "multi_modal_projector.")
            k = k.replace("model.language_model.", "language_model.model.")
            k = k.replace("lm_head.", "language_model.lm_head.")
            old[k] = v.contiguous()
        for f in tmp_path.glob("*.safetensors"):
            f.unlink()
        save_file(old, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    return hf


def stream_ids(n_frames, seed=0, image=320, text_between=3):
    g = torch.Generator().manual_seed(seed)
    ids = []
    for _ in range(n_frames):
        ids.append(image)
        ids += torch.randint(0, 300, (text_between,), generator=g).tolist()
    return torch.tensor([ids])


def hf_logits(hf, ids, pixels):
    F_ = pixels.shape[0]
    is_img = ids[0] == 320
    n_vis = is_img.long().cumsum(0)
    xmask = (torch.arange(F_)[None, :] < n_vis[:, None]).long()  # (T, F): prefix visibility
    with torch.no_grad():
        out = hf(
            input_ids=ids,
            pixel_values=pixels[None, :, None],  # (1, F, tiles=1, 3, H, W)
            aspect_ratio_ids=torch.ones(1, F_, dtype=torch.long),
            aspect_ratio_mask=torch.ones(1, F_, 1, dtype=torch.long),
            cross_attention_mask=xmask[None, :, :, None],
        )
    return out.logits.float()


@pytest.mark.parametrize("old_keys", [False, True])
@pytest.mark.parametrize("n_frames", [1, 3])
def test_stock_mode_matches_transformers(tmp_path, n_frames, old_keys):
    hf = make_hf(tmp_path, old_keys=old_keys)
    ours = load_model(tmp_path)  # the defaults a user gets: stock mode, transformers' taps
    assert ours.cfg.video.mode == "stock" and ours.tokens_per_frame == 5
    assert ours.cfg.video.feature_taps == "layer_output"  # transformers 5.x taps each layer's OUTPUT
    pixels = torch.randn(n_frames, 3, 28, 28)
    ids = stream_ids(n_frames)
    ref = hf_logits(hf, ids, pixels)
    with torch.no_grad():
        got = ours.logits(ids, pixels)
    assert got.shape == ref.shape == (1, ids.shape[1], 320)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_layer_input_taps_equal_transformers_shifted(tmp_path):
    """Our default taps the INPUT of layer i (Meta, transformers 4.x): equal to 5.x with indices i-1."""
    hf = make_hf(tmp_path, intermediate=(0, 2))
    ours = load_model(tmp_path, video={"feature_taps": "layer_output"})
    cfg = ours.cfg
    shifted = dataclasses.replace(
        cfg,
        vision=dataclasses.replace(cfg.vision, intermediate_layers=(1, 3)),
        video=dataclasses.replace(cfg.video, feature_taps="layer_input"),
    )
    m = Model(shifted).eval()
    m.load_state_dict(ours.state_dict())
    pixels, ids = torch.randn(2, 3, 28, 28), stream_ids(2)
    with torch.no_grad():
        torch.testing.assert_close(m.logits(ids, pixels), hf_logits(hf, ids, pixels), atol=1e-4, rtol=1e-4)
    m2 = Model(
        dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, feature_taps="layer_input"))
    ).eval()
    m2.load_state_dict(ours.state_dict())
    with torch.no_grad():
        # the two semantics really differ on the same indices
        assert (m2.encode_frames(pixels) - m.encode_frames(pixels)).abs().max() > 1e-3


def test_empty_rows_both_behaviours(tmp_path):
    """Tokens before the first frame: stock Mllama (and so our stock default) lets them see every
    frame; "none" (the MOSS default, what a real-time stream does) lets them see nothing."""
    hf = make_hf(tmp_path)
    pixels = torch.randn(2, 3, 28, 28)
    ids = torch.cat([torch.tensor([[5, 6, 7]]), stream_ids(2)], dim=1)  # text before the first frame
    legacy = load_model(tmp_path)  # the stock default
    assert legacy.cfg.video.empty_rows == "all"
    correct = load_model(tmp_path, video={"empty_rows": "none"})
    is_img = ids[0] == 320
    n_vis = is_img.long().cumsum(0)
    xmask = (torch.arange(2)[None, :] < n_vis[:, None]).long()
    with torch.no_grad():
        ref = hf(
            input_ids=ids,
            pixel_values=pixels[None, :, None],
            aspect_ratio_ids=torch.ones(1, 2, dtype=torch.long),
            aspect_ratio_mask=torch.ones(1, 2, 1, dtype=torch.long),
            cross_attention_mask=xmask[None, :, :, None],
        ).logits.float()
        torch.testing.assert_close(legacy.logits(ids, pixels), ref, atol=1e-4, rtol=1e-4)
        good = correct.logits(ids, pixels)
        # the first three tokens see no frame: same as a text-only run of those tokens
        text_only = correct.logits(ids[:, :3])
        torch.testing.assert_close(good[:, :3], text_only, atol=1e-5, rtol=1e-5)
        assert (good[:, :3] - ref[:, :3]).abs().max() > 1e-4


# ---- MOSS mode -----------------------------------------------------------------------------------


def moss_model(seed=0, **kw):
    torch.manual_seed(seed)
    m = Model(C.tiny("moss", **kw)).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "gate" in n:
                p.fill_(0.7)
            elif "norm" in n and p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.2)
    return m


def test_moss_pooling_token_count():
    assert C.moss_11b().tokens_per_frame == 101  # 40x40 grid pooled by 4 + CLS
    assert C.llama_11b_stock().tokens_per_frame == 1601
    m = moss_model()
    px = torch.randn(3, 3, 56, 56)
    with torch.no_grad():
        states = m.encode_frames(px)
        assert states.shape == (3, m.tokens_per_frame, 64) and m.tokens_per_frame == 5
        # token 0 is CLS; token 1 is the mean of the top-left 4x4 patch cell, projected
        feats = m.vision_model(px)
        grid = feats[:, 1:].unflatten(1, (8, 8))
        torch.testing.assert_close(states[:, 0], m.multi_modal_projector(feats[:, 0]))
        torch.testing.assert_close(states[:, 1], m.multi_modal_projector(grid[:, :4, :4].mean((1, 2))))
        torch.testing.assert_close(states[:, 2], m.multi_modal_projector(grid[:, :4, 4:].mean((1, 2))))


def test_moss_key_norm_rotate_order():
    """key = k_norm(RoPE(k_proj(x), frame_pos)); the other order gives different keys."""
    m = moss_model()
    states = torch.randn(2, m.tokens_per_frame, 64)
    k_raw, _ = m.project_memory(states)
    pos = torch.tensor([7, 19])
    got = m.finalize_keys(k_raw, pos)
    xa = m.language_model.layers[1].cross_attn
    cos, sin = rope_cos_sin(m.inv_freq, pos, k_raw.dtype)
    expect = xa.k_norm(rotate(xa.k_proj(states).view(2, 5, 2, 16), cos[:, None, None], sin[:, None, None]))
    torch.testing.assert_close(got[:, 0], expect)
    wrong = rotate(xa.k_norm(xa.k_proj(states).view(2, 5, 2, 16)), cos[:, None, None], sin[:, None, None])
    assert (wrong - expect).abs().max() > 1e-3


def test_moss_frame_position_is_its_image_token_position():
    """Moving text before a frame changes its keys' rotation: the frame sits at its <|image|> position."""
    m = moss_model()
    pixels = torch.randn(1, 3, 56, 56)
    img = m.cfg.video.image_token_id
    a = torch.tensor([[1, 2, img, 9]])
    b = torch.tensor([[1, 2, 3, 4, 5, img, 9]])
    with torch.no_grad():
        la, lb = m.logits(a, pixels), m.logits(b, pixels)
        # same logits would mean the frame ignored its position; compare the token after the frame,
        # against a model whose frame keys are rotated to position 2 in both cases
        assert (la[0, -1] - lb[0, -1]).abs().max() > 1e-4
    ks = []
    orig = m.finalize_keys

    def spy(k, pos):
        ks.append(pos.clone())
        return orig(k, pos)

    m.finalize_keys = spy
    with torch.no_grad():
        m.logits(b, pixels)
        m.logits(torch.tensor([[img, 4, img, 5, 6, img]]), torch.randn(3, 3, 56, 56))
    assert ks[0].tolist() == [5]
    assert ks[1].tolist() == [0, 2, 5]


# ---- checkpoints --------------------------------------------------------------------------------


def test_moss_checkpoint_round_trip_bit_identical(tmp_path):
    m = moss_model()
    save_model(m, tmp_path / "ckpt", max_shard_mb=0.05)  # force sharding
    assert (tmp_path / "ckpt" / "model.safetensors.index.json").exists()
    back = load_model(tmp_path / "ckpt")
    assert back.cfg == m.cfg and back.cfg.video.mode == "moss"
    for (k, a), (k2, b) in zip(m.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    ids = torch.tensor([[3, m.cfg.video.image_token_id, 4, 5]])
    px = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        assert torch.equal(m.logits(ids, px), back.logits(ids, px))


def test_pickled_weights_are_refused(tmp_path):
    m = moss_model()
    save_model(m, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(LoadError, match="pickled"):
        load_model(tmp_path)


def test_wrong_shape_names_tensor_and_shapes(tmp_path):
    m = moss_model()
    save_model(m, tmp_path)
    from safetensors.torch import load_file

    sd = load_file(str(tmp_path / "model.safetensors"))
    sd["model.multi_modal_projector.weight"] = torch.zeros(64, 95)
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(LoadError) as e:
        load_model(tmp_path)
    msg = str(e.value)
    assert "multi_modal_projector.weight" in msg and "[64, 95]" in msg and "[64, 96]" in msg


def test_missing_config_and_wrong_model_type(tmp_path):
    with pytest.raises(LoadError, match="config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "qwen2_vl"}')
    with pytest.raises(LoadError, match="qwen2_vl"):
        load_model(tmp_path)
    with pytest.raises(LoadError, match="does not exist"):
        load_model(tmp_path / "nope")


def test_hub_id_offline_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LoadError, match="hub"):
        load_model("OpenMOSS-Team/moss-video-preview-realtime-sft")
    with pytest.raises(LoadError, match="local only"):
        load_model("OpenMOSS-Team/moss-video-preview-realtime-sft", local_only=True)


def test_unknown_or_impossible_quantization_is_one_clear_sentence(tmp_path):
    save_model(moss_model(), tmp_path)
    with pytest.raises(LoadError, match="int8, fp8-vision"):
        load_model(tmp_path, quantize="int4")
    if not torch.cuda.is_available():  # FP8 matmuls need an Ada/Hopper GPU: on a CPU, say so
        with pytest.raises(LoadError, match="compute capability 8.9"):
            load_model(tmp_path, quantize="fp8-vision")


def test_int8_weight_only_layers_compute_their_dequantized_product():
    """quantize_int8: each text projection keeps int8 rows and one float32 scale per row (no float
    weight; rounding error at most half a step), computes exactly the product with its dequantized
    weight, and fusing q/k/v and gate/up (the GPU decode step) changes no logit."""
    from engine.decoder import Linear
    from engine.loading import quantize_int8

    m = moss_model()
    ref = {n: mod.weight.detach().clone() for n, mod in m.named_modules() if isinstance(mod, Linear)}
    quantize_int8(m, "cpu")
    ids = torch.tensor([[3, m.cfg.video.image_token_id, 4, 5, 6]])
    px = torch.randn(1, 3, 56, 56)
    for n, mod in m.named_modules():
        if n in ref:
            assert (
                mod.weight is None and mod.qweight.dtype == torch.int8 and mod.qscale.dtype == torch.float32
            )
            deq = mod.qweight.float() * mod.qscale[:, None]
            assert (deq - ref[n]).abs().max() <= 0.5 * mod.qscale.max() + 1e-7
            x = torch.randn(2, mod.in_features)
            torch.testing.assert_close(mod(x), torch.nn.functional.linear(x, deq, mod.bias))
    with torch.no_grad():
        before = m.logits(ids, px)
        m.fuse_projections()
        assert isinstance(m.language_model.layers[0].mlp.gate_up_weight, tuple)
        torch.testing.assert_close(m.logits(ids, px), before)

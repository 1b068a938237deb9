"""The baselines of `python -m engine.bench gpu`: Qwen2.5-VL-7B and stock Llama-3.2-11B-Vision through
transformers (random weights, the published configs), timed the reference's way: greedy, inputs
prepared outside the timer, one warm-up, TTFT = a synchronized 1-token generate, TPS = (n - 1) /
(n-token generate - TTFT) with n = N_NEW."""

from __future__ import annotations

import gc
import time

import torch

N_NEW = 128


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev):
    sync(dev)
    t = time.perf_counter()
    out = fn()
    sync(dev)
    return time.perf_counter() - t, out


def hf_generate_times(model, inputs, dev):
    """TTFT = 1-token generate; TPS = (n-1) / (n-token generate - TTFT) (the reference method)."""
    kw = dict(do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, **kw)  # warm-up
        ttft, _ = timed(lambda: model.generate(**inputs, max_new_tokens=1, min_new_tokens=1, **kw), dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        full, _ = timed(
            lambda: model.generate(**inputs, max_new_tokens=N_NEW, min_new_tokens=N_NEW, **kw), dev
        )
    r = {"offline_ttft_s": ttft, "decode_tok_s": (N_NEW - 1) / max(1e-9, full - ttft)}
    if dev.type == "cuda":
        r["peak_mem_GB"] = torch.cuda.max_memory_allocated() / 1e9
    return r


def _init_hf(cls, config, dev, dtype):
    torch.manual_seed(0)
    with torch.device(dev):
        prev = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = cls(config)
        finally:
            torch.set_default_dtype(prev)
    return model.eval()


def bench_qwen(scale, frames_list, dev, dtype, out):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    if scale == "full":
        text = dict(
            vocab_size=152064,
            hidden_size=3584,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            intermediate_size=18944,
            max_position_embeddings=128000,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
        )
        vision = dict(
            depth=32,
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            out_hidden_size=3584,
            fullatt_block_indexes=[7, 15, 23, 31],
            window_size=112,
        )
        h, w = 42, 74  # 588 x 1036 in 14-pixel patches (16:9 at qwen_vl_utils defaults)
    else:
        text = dict(
            vocab_size=152064,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=128,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        )
        vision = dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            fullatt_block_indexes=[1],
            window_size=112,
        )
        h, w = 4, 8
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision)
    cfg._attn_implementation = "sdpa"
    model = _init_hf(Qwen2_5_VLForConditionalGeneration, cfg, dev, dtype)
    res = {"model": "Qwen2.5-VL-7B (transformers)" if scale == "full" else "Qwen2.5-VL (tiny)"}
    for F in frames_list:
        t = F // 2  # temporal patch 2
        n_vid = t * (h // 2) * (w // 2)
        pv = torch.randn(t * h * w, 3 * 2 * 14 * 14, device=dev, dtype=dtype)
        q = torch.randint(1000, 2000, (20,)).tolist()
        ids = [151644] + [151652] + [151656] * n_vid + [151653] + q + [151645]
        inputs = {
            "input_ids": torch.tensor([ids], device=dev),
            "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device=dev),
            "pixel_values_videos": pv,
            "video_grid_thw": torch.tensor([[t, h, w]], device=dev),
        }
        r = hf_generate_times(model, inputs, dev)
        r["video_tokens"] = n_vid
        res[F] = r
        out(res)
        del inputs, pv
    del model
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return res


def bench_mllama(scale, frames_list, dev, dtype, out):
    from transformers import MllamaConfig, MllamaForConditionalGeneration

    if scale == "full":
        vision = dict(max_num_tiles=1, supported_aspect_ratios=[[1, 1]], image_size=560)
        text = {}
    else:
        vision = dict(
            hidden_size=32,
            num_hidden_layers=4,
            num_global_layers=2,
            attention_heads=2,
            intermediate_size=64,
            vision_output_dim=96,
            image_size=28,
            patch_size=14,
            max_num_tiles=1,
            supported_aspect_ratios=[[1, 1]],
            intermediate_layers_indices=[1, 3],
        )
        text = dict(
            vocab_size=320,
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=128,
            cross_attention_layers=[1, 3],
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
    cfg = MllamaConfig(
        vision_config=vision, text_config=text, image_token_index=text.get("vocab_size", 128256)
    )
    cfg._attn_implementation = "sdpa"
    model = _init_hf(MllamaForConditionalGeneration, cfg, dev, dtype)
    S = cfg.vision_config.image_size
    img = cfg.image_token_index
    res = {"model": "Llama-3.2-11B-Vision stock (transformers)" if scale == "full" else "Mllama (tiny)"}
    for F in frames_list:
        q = torch.randint(10, 300, (20,)).tolist()
        ids = [img] * F + q
        T = len(ids)
        n_vis = torch.tensor([min(i + 1, F) for i in range(T)])
        xmask = (torch.arange(F)[None, :] < n_vis[:, None]).long()[None, :, :, None]
        inputs = {
            "input_ids": torch.tensor([ids], device=dev),
            "attention_mask": torch.ones(1, T, dtype=torch.long, device=dev),
            "pixel_values": torch.randn(1, F, 1, 3, S, S, device=dev, dtype=dtype),
            "aspect_ratio_ids": torch.ones(1, F, dtype=torch.long, device=dev),
            "aspect_ratio_mask": torch.ones(1, F, 1, dtype=torch.long, device=dev),
            "cross_attention_mask": xmask.to(dev),
        }
        try:
            res[F] = hf_generate_times(model, inputs, dev)
        except torch.OutOfMemoryError:
            res[F] = {"error": "out of memory"}
            torch.cuda.empty_cache()
        out(res)
    del model
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return res

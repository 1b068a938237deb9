"""Decode-one-token with fixed shapes, replayed as a CUDA graph (gpt-fast style).

Why: a Python decode loop over 40 layers is launch-bound (the reference gets 38 tok/s on an H200,
about a quarter of what the memory bandwidth allows, trap 6). With every shape fixed the whole step
is captured once and replayed: one launch per token, no host sync, nothing allocated.

What makes the shapes fixed:
- the self-attention cache is read in full (max_len) with a mask `arange(max_len) <= pos`, and the
  new K/V are written with `index_copy_` at a position held in a device tensor;
- the visual memory is read in full (capacity x tokens) with its `valid` mask (a committed frame's
  tokens), so committing a frame changes a buffer, not a shape.
Reading masked-out cache and memory costs bandwidth only (tens of MB per token against ~18.5 GB of
weights at 11B). It knows nothing of tokenizers, threads or the stream protocol.
"""

from __future__ import annotations

import torch

from engine.attention import attend
from engine.decoder import Eager, rope_cos_sin, run_layers
from engine.model import Model


class Static(Eager):
    """engine.decoder's layers with fixed shapes: the chunk is one token at the position held in the
    device tensor `pos`; its K/V are written with index_copy_ and it reads the whole cache
    (Ls, 1, KV, S, D) under `arange(S) <= pos`; it reads the whole visual memory (Lx, 1, KV, M, D)
    under `valid`, and a row gate of 0 while no frame is committed."""

    def __init__(self, cos, sin, rope_x, pos, cache_k, cache_v, mem_k, mem_v, mem_valid, dtype):
        S = cache_k.shape[3]
        self_mask = (torch.arange(S, device=pos.device) <= pos[0, 0])[None, None, None]  # (1, 1, 1, S)
        any_frame = mem_valid.any()
        x_mask = (mem_valid | ~any_frame)[None, None, None]  # never fully masked (NaN); row gate drops it
        row = any_frame.to(dtype).view(1, 1, 1)
        super().__init__(cos, sin, (mem_k, mem_v), x_mask, row, row, rope_x)
        self.pos, self.cache_k, self.cache_v, self.self_mask = pos, cache_k, cache_v, self_mask

    def self_attend(self, n, q, k, v):
        self.cache_k[n].index_copy_(2, self.pos[0], k)
        self.cache_v[n].index_copy_(2, self.pos[0], v)
        return attend(q, self.cache_k[n], self.cache_v[n], mask=self.self_mask)

    def sees_frames(self, n):
        return True  # shapes never change: the row gate drops what no frame should reach

    def cross_attend(self, n, q):
        mem_k, mem_v = self.xkv
        return attend(q, mem_k[n], mem_v[n], mask=self.xmask)


def static_decode_step(model: Model, ids, pos, cache_k, cache_v, mem_k, mem_v, mem_valid):
    """ids, pos (1, 1) device tensors. cache_k/v (Ls, 1, KV, S, D); mem_k/v (Lx, 1, KV, M, D);
    mem_valid (M,) bool. Writes this token's K/V into the cache. Returns logits (V,) float32."""
    lm = model.language_model
    x = lm.embed_tokens(ids)  # (1, 1, C)
    cos, sin = rope_cos_sin(model.inv_freq, pos, x.dtype)
    ex = Static(
        cos[:, None],
        sin[:, None],
        model.cfg.video.xattn_rope,
        pos,
        cache_k,
        cache_v,
        mem_k,
        mem_v,
        mem_valid,
        x.dtype,
    )
    return model.lm_head(lm.norm(run_layers(ex, lm.layers, x)))[0, 0].float()


class GraphDecoder:
    """Holds static input buffers and replays the captured decode step (CUDA), or runs it eagerly (CPU)."""

    def __init__(self, model: Model, cache, memory, use_graph: bool | None = None, compile: bool = False):
        self.model, self.cache, self.memory = model, cache, memory
        dev = cache.k.device
        self.ids = torch.zeros(1, 1, dtype=torch.long, device=dev)
        self.pos = torch.zeros(1, 1, dtype=torch.long, device=dev)
        self.use_graph = dev.type == "cuda" if use_graph is None else use_graph
        self.graph = None
        self.out = None
        if self.use_graph:
            model.fuse_projections()
        # torch.compile (inductor) fuses the step's small elementwise kernels (norms, RoPE, residuals,
        # SiLU*up) before the graph is captured; off by default (a minute of compilation per shape)
        self.step = static_decode_step
        self.compiled = False
        if compile:
            self.step = torch.compile(static_decode_step, dynamic=False)
            self.compiled = True

    def _run(self):
        c, m = self.cache, self.memory
        return self.step(self.model, self.ids, self.pos, c.k, c.v, m.k, m.v, m.valid)

    @torch.inference_mode()
    def capture(self):
        """Warm up on a side stream, then capture one decode step. Scratch writes go to the last
        cache row, which no real token reaches before `reset` (the cache has slack beyond max_context)."""
        last = self.cache.k.shape[3] - 1
        self.pos.fill_(last)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            try:
                for _ in range(2):
                    self._run()
            except Exception as e:  # a compiler problem must not stop the decoder: run the step as is
                if not self.compiled:
                    raise
                print(f"torch.compile of the decode step failed ({type(e).__name__}: {e}); eager step used")
                self.step, self.compiled = static_decode_step, False
                for _ in range(2):
                    self._run()
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the perception thread keeps launching work on its own stream during capture
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.out = self._run()

    @torch.inference_mode()
    def __call__(self, token: int, pos: int) -> torch.Tensor:
        self.ids.fill_(token)
        self.pos.fill_(pos)
        if not self.use_graph:
            return self._run()
        if self.graph is None:
            self.capture()
            self.ids.fill_(token)
            self.pos.fill_(pos)
        self.graph.replay()
        return self.out

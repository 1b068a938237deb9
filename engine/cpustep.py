"""The text decoder's step on a CPU: a few rows (one token, or a token and a frame's `<|image|>`) through
every layer with as few operator calls and weight bytes as the arithmetic allows.

Why: on a 2-core CPU the small model's decode step is bound by operator calls (~250 through the
nn.Modules, a few microseconds each under the GIL) and by the bytes it streams, not by arithmetic
(`python -m engine.bench cpu`). So, for the rows of one step:
- each product reads a copy of its weight, q/k/v and gate/up as one matrix each: int8 rows with a
  bfloat16 scale each where bfloat16 is native (`torch._weight_int8pack_mm` on bfloat16 rows: a
  quarter of the bytes of float32, and as fast for the two rows of a frame's chunk as for one),
  else float16 (half the bytes; the CPU's float16 product costs as much per row as its bytes);
- an RMSNorm's weight is folded into the columns of the product after it (the norm is then a row
  scale, cast to the product's input dtype);
- RoPE comes from a table of cos/sin by position, the half-rotation as `roll` + one `addcmul`;
- cross-attention is two matrix products with a KV head's G query heads (and the rows) as the rows
  of one product, each key and value read once (grouped-query attention, no repeated heads); the
  softmax scale is folded into q_norm's weight;
- the gates' tanh is computed once; no nn.Module calls;
- on CPUs with native bfloat16 dot products (AVX512-BF16, AMX) the runtime keeps the visual memory in
  bfloat16 (`memory_dtype`): the three cross-attention layers read half the bytes per token.
The layer math is engine.decoder's (this module is its `Folded` execution strategy); the arithmetic is
Model.forward_text's up to the rounding of the weights: with float16 weights the
shipped model says the same words as in float32, with int8 the same on almost every frame (tests;
the held-out evaluation gives the same target numbers). The weights are copied when the step is
built: a model trained further needs a new step. It knows nothing of tokenizers, threads or the
stream protocol.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.attention import attend
from engine.decoder import Execution, cross_attention_layer, rope_cos_sin, run_layers, self_attention_layer
from engine.model import Model
from engine.quant import quantize_rows


def usable(model: Model) -> bool:
    """A float32 model on the CPU (its projections may hold int8 rows: load_model(quantize="int8"))."""
    p = next(model.parameters())
    return p.device.type == "cpu" and p.dtype == torch.float32


def _weight(lin) -> torch.Tensor:
    """A projection's weight in float32 (dequantized where it holds int8 rows)."""
    if getattr(lin, "int8", False):
        return lin.qweight.float() * lin.qscale.float()[:, None]
    return lin.weight.detach().float()


@functools.cache
def bf16_native() -> bool:
    """The CPU has bfloat16 dot-product instructions (Linux: /proc/cpuinfo), where a bfloat16 matrix
    product reads half the bytes at no extra cost; elsewhere bfloat16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_weights() -> str:
    """int8 where bfloat16 is native (its int8 product kernel takes bfloat16 rows), else float16."""
    return "int8" if bf16_native() else "float16"


def memory_dtype() -> torch.dtype:
    """The visual memory's dtype under this step (its K/V are only read by the step's products)."""
    return torch.bfloat16 if bf16_native() else torch.float32


def _int8_mm(x: torch.Tensor, w: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return torch._weight_int8pack_mm(x, *w)


@dataclass
class FoldedLayer:
    """One decoder layer's weight copies: products as stored by the step (a float16 matrix, or int8
    rows and bfloat16 scales), each RMSNorm folded into the product after it."""

    is_cross: bool
    wqkv: object  # q/k/v (self-attention) or q (cross-attention), input norm folded in
    wo: object
    wgu: object  # gate/up, post-attention norm folded in
    wd: object
    q_norm: torch.Tensor | None = None  # cross-attention: q_norm's weight times the softmax scale
    gates: tuple[float, float] = (1.0, 1.0)  # cross-attention: tanh of the gates

    def __call__(self, x, ex, n):
        return (cross_attention_layer if self.is_cross else self_attention_layer)(ex, self, n, x)


class Folded(Execution):
    """engine.decoder's layers over FoldedLayer copies, rows (T, C), heads (T, H, D): one chunk of a
    CpuDecodeStep call (its cache, visual memory, masks and RoPE angles)."""

    def __init__(self, step: CpuDecodeStep, start, T, cache, xkv, xmask, row):
        self.step, self.start, self.T, self.cache, self.xkv = step, start, T, cache, xkv
        self.cos, self.sin = step.cos[start : start + T, None], step.sin[start : start + T, None]  # (T, 1, D)
        self.bias = None
        if xmask is not None:
            self.bias = torch.zeros(xmask.shape).masked_fill_(~xmask, float("-inf"))  # (T, S)
        self.row_attn = self.row_mlp = row
        self.rope_x = step.rope_x

    def rope(self, t):  # rotate(t) = roll(t) with the first half's sin negated (step.sin)
        return torch.addcmul(t * self.cos, t.roll(self.step.half, -1), self.sin)

    def qkv(self, layer, x):
        st = self.step
        qkv = st.mm(st.normed(x), layer.wqkv).float().view(self.T, st.H + 2 * st.KV, st.D)
        return qkv[:, : st.H], qkv[:, st.H : st.H + st.KV], qkv[:, st.H + st.KV :]

    def self_attend(self, n, q, k, v):
        T, start = self.T, self.start
        ck, cv = self.cache.k[n, 0], self.cache.v[n, 0]  # (KV, S, D)
        ck[:, start : start + T] = k.transpose(0, 1)
        cv[:, start : start + T] = v.transpose(0, 1)
        o = attend(q.transpose(0, 1)[None], ck[None, :, : start + T], cv[None, :, : start + T], causal=T > 1)
        return o[0].transpose(0, 1).reshape(T, -1)

    def self_out(self, layer, o):
        return self.step.mm(o.to(self.step.wdtype), layer.wo)

    cross_out = self_out

    def mlp(self, layer, x):
        st = self.step
        g, u = st.mm(st.normed(x), layer.wgu).float().chunk(2, -1)
        return st.mm((F.silu(g) * u).to(st.wdtype), layer.wd)

    def sees_frames(self, n):
        return self.xkv is not None

    def cross_q(self, layer, x):
        st = self.step
        q = st.mm(st.normed(x), layer.wqkv).float().view(self.T, st.H, st.D)
        return F.rms_norm(q, (st.D,), layer.q_norm, st.eps)

    def cross_attend(self, n, q):
        """Grouped-query attention as two products: a KV head's G query heads and the rows are the
        rows of one product; each key and value read once; the softmax scale is in q_norm."""
        T, KV, G, D = self.T, self.step.KV, self.step.G, self.step.D
        k, v = self.xkv[n]
        q = q.view(T, KV, G, D).permute(1, 2, 0, 3).reshape(KV, G * T, D)
        s = torch.matmul(q.to(k.dtype), k[0].transpose(-1, -2))  # (KV, G*T, S)
        if self.bias is not None:
            s = (s.view(KV, G, T, -1) + self.bias).view(KV, G * T, -1)
        p = torch.softmax(s, -1, dtype=torch.float32).to(v.dtype)
        return torch.matmul(p, v[0]).view(KV, G, T, D).permute(2, 0, 1, 3).reshape(T, G * KV * D)

    def gates(self, layer):
        return layer.gates


class CpuDecodeStep:
    MAX_ROWS = 4  # chunks longer than this (prefill) go through Model.forward_text

    def __init__(self, model: Model, max_pos: int, weights: str | None = None):
        """weights: "float16" (copies of the float32 weights) or "int8" (rows quantized symmetrically
        with a bfloat16 scale each, products through torch._weight_int8pack_mm on bfloat16 rows: about
        2x faster than float16 for one row and 3x for two, where bfloat16 is native); None =
        default_weights()."""
        weights = weights or default_weights()
        if weights not in ("float16", "int8"):
            raise ValueError(f"weights must be 'float16' or 'int8', not {weights!r}")
        t = model.cfg.text
        self.H, self.KV, self.D = t.num_heads, t.num_kv_heads, t.head_dim
        self.G = self.H // self.KV
        self.eps = t.rms_norm_eps
        self.half = self.D // 2
        self.weights = weights
        self.wdtype = torch.float16 if weights == "float16" else torch.bfloat16  # the products' inputs
        self.mm = F.linear if weights == "float16" else _int8_mm
        # RoPE by position; rotate(x) = cat(-x2, x1) = roll(x) with the first half's sin negated
        self.cos, self.sin = rope_cos_sin(model.inv_freq.cpu(), torch.arange(max_pos), torch.float32)
        self.sin[:, : self.half].neg_()
        self.rope_x = model.cfg.video.xattn_rope
        lm = model.language_model

        def w(*lins, norm=None):  # one or more stacked weights, a norm's weight folded in
            m = torch.cat([_weight(lin) for lin in lins])
            m = m if norm is None else m * norm.weight.detach().float()[None, :]
            if weights == "float16":
                return m.to(torch.float16)
            q, scale = quantize_rows(m)
            return q, scale.to(torch.bfloat16)

        self.layers = []
        for layer in lm.layers:
            mlp = layer.mlp
            ffn = (w(mlp.gate_proj, mlp.up_proj, norm=layer.post_attention_layernorm), w(mlp.down_proj))
            if layer.is_cross:
                xa = layer.cross_attn
                q_norm = (xa.q_norm.weight.detach().float() * self.D**-0.5).contiguous()
                gates = (
                    float(layer.cross_attn_attn_gate.detach().tanh()),
                    float(layer.cross_attn_mlp_gate.detach().tanh()),
                )
                self.layers.append(
                    FoldedLayer(
                        True, w(xa.q_proj, norm=layer.input_layernorm), w(xa.o_proj), *ffn, q_norm, gates
                    )
                )
            else:
                sa = layer.self_attn
                qkv = w(sa.q_proj, sa.k_proj, sa.v_proj, norm=layer.input_layernorm)
                self.layers.append(FoldedLayer(False, qkv, w(sa.o_proj), *ffn))
        self.embed = lm.embed_tokens.weight.detach()
        self.head = w(model.lm_head, norm=lm.norm)

    def normed(self, x: torch.Tensor) -> torch.Tensor:
        """RMSNorm without its weight (folded into the next product), in the weights' dtype."""
        return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(self.eps))).to(self.wdtype)

    @torch.inference_mode()
    def __call__(self, ids: list[int], start: int, cache, xkv=None, xmask=None, row=None) -> torch.Tensor:
        """ids: the chunk's tokens (at most MAX_ROWS) at text positions start..; cache: KVCache (written
        at start..); xkv: per cross-attention layer (k, v) each (1, KV, S, D), or None (no frame
        visible: those layers are the identity); xmask (T, S) bool, True = may attend, or None (every
        row sees all S keys); row (T, 1): 0 for rows whose cross-attention and its MLP are dropped, or
        None (none dropped). Returns the last row's logits (V,) float32."""
        T = len(ids)
        x = self.embed[ids] if T > 1 else self.embed[ids[0]][None]  # (T, C)
        x = run_layers(Folded(self, start, T, cache, xkv, xmask, row), self.layers, x)
        return self.mm(self.normed(x[-1:]), self.head)[0].float()

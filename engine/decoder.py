"""The text decoder, its math written once.

A decoder layer is either self-attention (RMSNorm, q/k/v, RoPE, causal attention over the text cache,
output projection, RMSNorm, SiLU MLP) or gated cross-attention (RMSNorm, q, q_norm, RoPE at the
token's text position in MOSS mode, attention over the visual memory, output projection times a tanh
gate and the row gate, then the MLP the same way). `self_attention_layer` and `cross_attention_layer`
below are that math, and the only place it is written.

How the numbers get computed is an *execution strategy* (`Execution`): where the chunk's K/V go and
which cached keys and visual keys each row sees, how a norm and a projection are computed, how RoPE
reads its angles. Three strategies run the same layers:
- `Eager` (here): the nn.Modules over a growing cache; training, offline passes and prefill;
- `engine.fast.Static`: fixed shapes (the whole cache and memory read with masks) so one decode step
  can be captured as a CUDA graph;
- `engine.cpustep.Folded`: copies of the weights with each RMSNorm folded into the product after it,
  int8 or float16, few operator calls: the CPU decode step.
`tests/test_decoder.py` runs every strategy on the same tiny model and inputs and compares logits.

Parameter names follow the HF checkpoint layout (language_model.layers.N.self_attn.q_proj, ...).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.attention import attend
from engine.config import TextConfig
from engine.quant import int8_linear

# --------------------------------------------------------------------------------------------------
# helpers


class Linear(nn.Linear):
    """nn.Linear that can hold int8 rows and their scales instead of its weight (engine.quant)."""

    int8 = False  # True once quantize_int8 gave it qweight/qscale (a plain attribute: a cheap check)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # int8 weight-only (engine.loading.quantize_int8): int8 rows and their scales replace `weight`
        self.register_buffer("qweight", None, persistent=False)
        self.register_buffer("qscale", None, persistent=False)

    def forward(self, x):
        if self.int8:
            return int8_linear(x, self.qweight, self.qscale, self.bias)
        return F.linear(x, self.weight, self.bias)


def _fused(x, w):
    """A product with a fused weight (fuse_projections): a tensor, or (int8 rows, scales)."""
    return F.linear(x, w) if isinstance(w, torch.Tensor) else int8_linear(x, *w)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:  # one operator call, not 7
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        dt = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dt)


def rope_inv_freq(t: TextConfig) -> torch.Tensor:
    hd = t.head_dim
    inv = 1.0 / (t.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    sc = t.rope_scaling_dict
    if sc and sc["rope_type"] == "llama3":
        factor, lo, hi = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
        old = sc["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old / hi) & (wavelen <= old / lo)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def rope_cos_sin(inv_freq: torch.Tensor, pos: torch.Tensor, dtype: torch.dtype):
    """pos (..., T) -> cos, sin (..., T, head_dim) computed in float32 then cast (as transformers)."""
    f = pos.float()[..., None] * inv_freq  # (..., T, hd/2)
    emb = torch.cat((f, f), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply RoPE. x (..., T, D); cos/sin broadcastable to x."""
    h = x.shape[-1] // 2
    rot = torch.cat((-x[..., h:], x[..., :h]), dim=-1)
    return x * cos + rot * sin


# --------------------------------------------------------------------------------------------------
# the layer math (the one definition)


def _rows(y, row):
    return y if row is None else y * row


def self_attention_layer(ex, layer, n: int, x):
    """x (the chunk's rows) through self-attention layer `layer`, the n-th self-attention layer."""
    q, k, v = ex.qkv(layer, x)
    o = ex.self_attend(n, ex.rope(q), ex.rope(k), v)
    x = x + ex.self_out(layer, o)
    return x + ex.mlp(layer, x)


def cross_attention_layer(ex, layer, n: int, x):
    """x through gated cross-attention layer `layer`, the n-th cross-attention layer. A row whose
    row gate is 0 (it sees no frame) keeps x; a chunk that sees no frame skips the layer."""
    if not ex.sees_frames(n):
        return x
    q = ex.cross_q(layer, x)
    if ex.rope_x:  # MOSS: RoPE after q_norm, at the token's text position
        q = ex.rope(q)
    a = ex.cross_out(layer, ex.cross_attend(n, q))
    g_attn, g_mlp = ex.gates(layer)
    x = x + g_attn * _rows(a, ex.row_attn)
    return x + g_mlp * _rows(ex.mlp(layer, x), ex.row_mlp)


def run_layers(ex, layers, x, call=None):
    """x through every layer in order; `call(layer, x, ex, n)` runs one (default: the layer itself,
    which a module's forward or a strategy's record turns into the functions above)."""
    s = c = 0
    for layer in layers:
        if layer.is_cross:
            n, c = c, c + 1
        else:
            n, s = s, s + 1
        x = call(layer, x, ex, n) if call is not None else layer(x, ex, n)
    return x


class Execution:
    """What a strategy provides to the layer math. `layer` is the strategy's own record of a layer
    (the nn.Module for Eager and Static, folded weight copies for the CPU step); x is the chunk's
    rows in the strategy's layout; q/k/v come back from `qkv` before RoPE."""

    rope_x = False  # cross-attention queries get RoPE (MOSS)
    row_attn = row_mlp = None  # per-row gates of the cross-attention output and its MLP (None: all 1)

    def rope(self, t): ...
    def qkv(self, layer, x): ...
    def self_attend(self, n, q, k, v): ...  # write the chunk's k, v into the cache; attend
    def self_out(self, layer, o): ...
    def mlp(self, layer, x): ...  # post-attention norm, then the MLP
    def sees_frames(self, n) -> bool: ...
    def cross_q(self, layer, x): ...  # input norm, q_proj, q_norm
    def cross_attend(self, n, q): ...
    def cross_out(self, layer, o): ...
    def gates(self, layer): ...  # (tanh(attention gate), tanh(MLP gate))


class Eager(Execution):
    """The nn.Modules in (B, H, T, D) layout. With a cache (per self-attention layer (k, v), each
    (B, KV, S, D)) the chunk is written at `start` and attends the whole prefix, causal bottom-right;
    without, the chunk attends itself causally (and `pad_mask`). xkv: per cross-attention layer
    (k, v) each (B, KV, S, D) or None; xmask (B, 1, T, S) bool or None (every row sees all S keys)."""

    def __init__(self, cos, sin, xkv, xmask, row_attn, row_mlp, rope_x, cache=None, start=0, pad_mask=None):
        self.cos, self.sin = cos, sin  # (B, 1, T, D): broadcast over heads
        self.xkv, self.xmask = xkv, xmask
        self.row_attn, self.row_mlp, self.rope_x = row_attn, row_mlp, rope_x
        self.cache, self.start, self.pad_mask = cache, start, pad_mask

    def rope(self, t):
        return rotate(t, self.cos, self.sin)

    def qkv(self, layer, x):
        return layer.self_attn.project_qkv(layer.input_layernorm(x))

    def self_attend(self, n, q, k, v):
        if self.cache is None:
            return attend(q, k, v, causal=True, mask=self.pad_mask)
        T, start = q.shape[2], self.start
        ck, cv = self.cache[n]
        ck[:, :, start : start + T] = k
        cv[:, :, start : start + T] = v
        # causal, bottom-right aligned: the chunk's tokens see the whole cached prefix
        return attend(q, ck[:, :, : start + T], cv[:, :, : start + T], causal=T > 1)

    @staticmethod
    def _merge(o):  # (B, H, T, D) -> (B, T, H*D)
        B, _, T, _ = o.shape
        return o.transpose(1, 2).reshape(B, T, -1)

    def self_out(self, layer, o):
        return layer.self_attn.o_proj(self._merge(o))

    def mlp(self, layer, x):
        return layer.mlp(layer.post_attention_layernorm(x))

    def sees_frames(self, n):
        return self.xkv is not None and self.xkv[n][0] is not None and self.xkv[n][0].shape[2] > 0

    def cross_q(self, layer, x):
        xa = layer.cross_attn
        B, T, _ = x.shape
        return xa.q_norm(xa.q_proj(layer.input_layernorm(x)).view(B, T, xa.h, xa.d)).transpose(1, 2)

    def cross_attend(self, n, q):
        k, v = self.xkv[n]
        return attend(q, k, v, causal=False, mask=self.xmask)

    def cross_out(self, layer, o):
        return layer.cross_attn.o_proj(self._merge(o))

    def gates(self, layer):
        return layer.cross_attn_attn_gate.tanh(), layer.cross_attn_mlp_gate.tanh()


# --------------------------------------------------------------------------------------------------
# the modules (weights; their forward is the layer math above under a strategy)


class MLP(nn.Module):
    def __init__(self, t: TextConfig):
        super().__init__()
        self.gate_proj = Linear(t.hidden_size, t.intermediate_size, bias=False)
        self.up_proj = Linear(t.hidden_size, t.intermediate_size, bias=False)
        self.down_proj = Linear(t.intermediate_size, t.hidden_size, bias=False)

    gate_up_weight: torch.Tensor | tuple | None = None  # fuse_projections

    def forward(self, x):
        if self.gate_up_weight is not None:
            g, u = _fused(x, self.gate_up_weight).chunk(2, -1)
            return self.down_proj(F.silu(g) * u)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class SelfAttention(nn.Module):
    def __init__(self, t: TextConfig):
        super().__init__()
        self.h, self.kv, self.d = t.num_heads, t.num_kv_heads, t.head_dim
        self.q_proj = Linear(t.hidden_size, self.h * self.d, bias=False)
        self.k_proj = Linear(t.hidden_size, self.kv * self.d, bias=False)
        self.v_proj = Linear(t.hidden_size, self.kv * self.d, bias=False)
        self.o_proj = Linear(self.h * self.d, t.hidden_size, bias=False)

    qkv_weight: torch.Tensor | tuple | None = None  # fuse_projections

    def project_qkv(self, x):
        """x (B, T, C) -> q (B, H, T, D), k and v (B, KV, T, D), before RoPE."""
        B, T, _ = x.shape
        if self.qkv_weight is not None:
            q, k, v = _fused(x, self.qkv_weight).split(
                [self.h * self.d, self.kv * self.d, self.kv * self.d], -1
            )
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        return (
            q.view(B, T, self.h, self.d).transpose(1, 2),
            k.view(B, T, self.kv, self.d).transpose(1, 2),
            v.view(B, T, self.kv, self.d).transpose(1, 2),
        )


class CrossAttention(nn.Module):
    def __init__(self, t: TextConfig):
        super().__init__()
        self.h, self.kv, self.d = t.num_heads, t.num_kv_heads, t.head_dim
        self.q_proj = Linear(t.hidden_size, self.h * self.d, bias=False)
        self.k_proj = Linear(t.hidden_size, self.kv * self.d, bias=False)
        self.v_proj = Linear(t.hidden_size, self.kv * self.d, bias=False)
        self.o_proj = Linear(self.h * self.d, t.hidden_size, bias=False)
        self.q_norm = RMSNorm(self.d, t.rms_norm_eps)
        self.k_norm = RMSNorm(self.d, t.rms_norm_eps)

    def project_kv(self, states: torch.Tensor):
        """states (F, N, C) -> raw keys and values (F, N, KV, D): computed ONCE per frame."""
        F_, N, _ = states.shape
        return self.k_proj(states).view(F_, N, self.kv, self.d), self.v_proj(states).view(
            F_, N, self.kv, self.d
        )


class SelfAttentionLayer(nn.Module):
    is_cross = False

    def __init__(self, t: TextConfig):
        super().__init__()
        self.self_attn = SelfAttention(t)
        self.mlp = MLP(t)
        self.input_layernorm = RMSNorm(t.hidden_size, t.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(t.hidden_size, t.rms_norm_eps)

    def forward(self, x, ex: Execution, n: int):
        return self_attention_layer(ex, self, n, x)


class CrossAttentionLayer(nn.Module):
    is_cross = True

    def __init__(self, t: TextConfig):
        super().__init__()
        self.cross_attn = CrossAttention(t)
        self.input_layernorm = RMSNorm(t.hidden_size, t.rms_norm_eps)
        self.cross_attn_attn_gate = nn.Parameter(torch.zeros(1))
        self.mlp = MLP(t)
        self.post_attention_layernorm = RMSNorm(t.hidden_size, t.rms_norm_eps)
        self.cross_attn_mlp_gate = nn.Parameter(torch.zeros(1))

    def forward(self, x, ex: Execution, n: int):
        return cross_attention_layer(ex, self, n, x)


class TextModel(nn.Module):
    def __init__(self, t: TextConfig):
        super().__init__()
        self.t = t
        self.embed_tokens = nn.Embedding(t.vocab_size + t.extra_embeddings, t.hidden_size)
        xl = set(t.cross_attention_layers)
        self.layers = nn.ModuleList(
            CrossAttentionLayer(t) if i in xl else SelfAttentionLayer(t) for i in range(t.num_layers)
        )
        self.norm = RMSNorm(t.hidden_size, t.rms_norm_eps)

    def fuse_projections(self) -> None:
        """Store each self-attention layer's q/k/v weights, and each MLP's gate/up weights, as one
        matrix (`qkv_weight`, `gate_up_weight`); the separate weights become views of it (no extra
        memory, state_dict unchanged), which MLP.forward and SelfAttention.project_qkv then use: 4
        matrix products per layer instead of 7 (fewer launches, longer rows; the GPU decode step).
        int8 layers (engine.quant) fuse their int8 rows and scales the same way, as a pair.
        Inference only. Idempotent."""
        with torch.no_grad():
            for layer in self.layers:
                mods = [(layer.mlp, ("gate_proj", "up_proj"), "gate_up_weight")]
                if not layer.is_cross:
                    mods.append((layer.self_attn, ("q_proj", "k_proj", "v_proj"), "qkv_weight"))
                for owner, names, attr in mods:
                    if getattr(owner, attr, None) is not None:
                        continue
                    lins = [getattr(owner, n) for n in names]
                    if all(lin.int8 for lin in lins):  # int8: rows and scales both
                        fused = (
                            torch.cat([lin.qweight for lin in lins]),
                            torch.cat([lin.qscale for lin in lins]),
                        )
                    elif all(lin.weight is not None for lin in lins):
                        fused = torch.cat([lin.weight for lin in lins])
                    else:
                        continue
                    row = 0
                    for lin in lins:
                        rows = slice(row, row + lin.out_features)
                        if isinstance(fused, tuple):
                            lin.qweight, lin.qscale = fused[0][rows], fused[1][rows]
                        else:
                            lin.weight.data = fused[rows]
                        row += lin.out_features
                    setattr(owner, attr, fused)

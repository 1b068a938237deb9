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
The arithmetic is Model.forward_text's up to the rounding of the weights: with float16 weights the
shipped model says the same words as in float32, with int8 the same on almost every frame (tests;
the held-out evaluation gives the same target numbers). The weights are copied when the step is
built: a model trained further needs a new step. It knows nothing of tokenizers, threads or the
stream protocol.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.attention import attend
from engine.model import CrossAttentionLayer, Model, rope_cos_sin
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
            if isinstance(layer, CrossAttentionLayer):
                xa = layer.cross_attn
                q_norm = (xa.q_norm.weight.detach().float() * self.D**-0.5).contiguous()
                gates = (
                    float(layer.cross_attn_attn_gate.detach().tanh()),
                    float(layer.cross_attn_mlp_gate.detach().tanh()),
                )
                self.layers.append(
                    (True, w(xa.q_proj, norm=layer.input_layernorm), q_norm, w(xa.o_proj), *ffn, *gates)
                )
            else:
                sa = layer.self_attn
                qkv = w(sa.q_proj, sa.k_proj, sa.v_proj, norm=layer.input_layernorm)
                self.layers.append((False, qkv, w(sa.o_proj), *ffn))
        self.embed = lm.embed_tokens.weight.detach()
        self.head = w(model.lm_head, norm=lm.norm)

    def _normed(self, x: torch.Tensor) -> torch.Tensor:
        """RMSNorm without its weight (folded into the next product), in the weights' dtype."""
        return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(self.eps))).to(self.wdtype)

    def _rope(self, x, cos, sin):
        return torch.addcmul(x * cos, x.roll(self.half, -1), sin)

    @torch.inference_mode()
    def __call__(self, ids: list[int], start: int, cache, xkv=None, xmask=None, row=None) -> torch.Tensor:
        """ids: the chunk's tokens (at most MAX_ROWS) at text positions start..; cache: KVCache (written
        at start..); xkv: per cross-attention layer (k, v) each (1, KV, S, D), or None (no frame
        visible: those layers are the identity); xmask (T, S) bool, True = may attend, or None (every
        row sees all S keys); row (T, 1): 0 for rows whose cross-attention and its MLP are dropped, or
        None (none dropped). Returns the last row's logits (V,) float32."""
        T = len(ids)
        H, KV, G, D = self.H, self.KV, self.G, self.D
        adt = self.wdtype  # the products' input dtype
        x = self.embed[ids] if T > 1 else self.embed[ids[0]][None]  # (T, C)
        cos, sin = self.cos[start : start + T, None], self.sin[start : start + T, None]  # (T, 1, D)
        bias = None
        if xmask is not None:
            bias = torch.zeros(xmask.shape).masked_fill_(~xmask, float("-inf"))  # (T, S)
        si = xi = 0
        for layer in self.layers:
            if layer[0]:
                _, wq, q_norm, wo, wgu, wd, g_attn, g_mlp = layer
                xi += 1
                if xkv is None:
                    continue
                k, v = xkv[xi - 1]
                q = self.mm(self._normed(x), wq).float().view(T, H, D)
                q = F.rms_norm(q, (D,), q_norm, self.eps)
                if self.rope_x:  # MOSS: RoPE after q_norm, at the token's text position
                    q = self._rope(q, cos, sin)
                # (T, H, D) -> (KV, G*T, D): a KV head's query heads and rows as rows of one product
                q = q.view(T, KV, G, D).permute(1, 2, 0, 3).reshape(KV, G * T, D)
                s = torch.matmul(q.to(k.dtype), k[0].transpose(-1, -2))  # (KV, G*T, S)
                if bias is not None:
                    s = (s.view(KV, G, T, -1) + bias).view(KV, G * T, -1)
                p = torch.softmax(s, -1, dtype=torch.float32).to(v.dtype)
                o = torch.matmul(p, v[0]).view(KV, G, T, D).permute(2, 0, 1, 3).reshape(T, H * D)
                a = self.mm(o.to(adt), wo)
                x = x + g_attn * (a if row is None else a * row)
                m = self.mm(self._ffn(x, wgu), wd)
                x = x + g_mlp * (m if row is None else m * row)
            else:
                _, wqkv, wo, wgu, wd = layer
                qkv = self.mm(self._normed(x), wqkv).float().view(T, H + 2 * KV, D)
                qk = self._rope(qkv[:, : H + KV], cos, sin)
                ck, cv = cache.k[si, 0], cache.v[si, 0]  # (KV, S, D)
                ck[:, start : start + T] = qk[:, H:].transpose(0, 1)
                cv[:, start : start + T] = qkv[:, H + KV :].transpose(0, 1)
                q = qk[:, :H].transpose(0, 1)[None]  # (1, H, T, D)
                o = attend(q, ck[None, :, : start + T], cv[None, :, : start + T], causal=T > 1)
                x = x + self.mm(o[0].transpose(0, 1).reshape(T, H * D).to(adt), wo)
                x = x + self.mm(self._ffn(x, wgu), wd)
                si += 1
        return self.mm(self._normed(x[-1:]), self.head)[0].float()

    def _ffn(self, x, wgu):
        """SiLU(gate) * up of the post-attention-normed x, cast for the down product."""
        g, u = self.mm(self._normed(x), wgu).float().chunk(2, -1)
        return (F.silu(g) * u).to(self.wdtype)

"""The whole network in one file: vision tower, pooling, projector, text decoder with gated
cross-attention layers (Llama-3.2-Vision / "Mllama", and the MOSS-Video-Preview variant).

Reads top to bottom: helpers (norms, RoPE), vision tower, text decoder blocks, the model with its
three entry points:
- `encode_frames(pixels)` -> cross-attention states, `project_memory(states)` -> per-layer K/V
  (the perception channel: run once per frame);
- `forward_text(...)` -> hidden states for a chunk of tokens against a KV cache and a visual memory
  (the generation channel; prefill and decode-one-token live in engine/generation.py);
- `logits(input_ids, pixel_values)` -> full-sequence logits in one offline pass (tests, training).

Parameter names follow the HF checkpoint layout (vision_model.*, language_model.*,
multi_modal_projector.*, lm_head.*) so loading is a rename of prefixes only. It knows nothing of
files, tokenizers, threads or sampling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.attention import attend
from engine.config import ModelConfig, TextConfig, VisionConfig
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
    """A product with a fused weight (Model.fuse_projections): a tensor, or (int8 rows, scales)."""
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
# vision tower


class VisionAttention(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.h, self.d = c.num_heads, c.hidden_size // c.num_heads
        self.q_proj = nn.Linear(c.hidden_size, c.hidden_size, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, c.hidden_size, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, c.hidden_size, bias=False)
        self.o_proj = nn.Linear(c.hidden_size, c.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = (
            p(x).view(B, N, self.h, self.d).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        o = attend(q, k, v, mask=mask)  # (B, H, N, d)
        return self.o_proj(o.transpose(1, 2).reshape(B, N, -1))


class VisionMLP(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(c.hidden_size, c.intermediate_size)
        self.fc2 = nn.Linear(c.intermediate_size, c.hidden_size)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class VisionLayer(nn.Module):
    def __init__(self, c: VisionConfig, gated: bool):
        super().__init__()
        self.self_attn = VisionAttention(c)
        self.mlp = VisionMLP(c)
        self.input_layernorm = nn.LayerNorm(c.hidden_size, eps=c.norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(c.hidden_size, eps=c.norm_eps)
        self.gated = gated
        if gated:  # scalar tanh gates of the global layers
            self.gate_attn = nn.Parameter(torch.ones(1) * math.pi / 4)
            self.gate_ffn = nn.Parameter(torch.ones(1) * math.pi / 4)

    def forward(self, x, mask):
        a = self.self_attn(self.input_layernorm(x), mask)
        x = x + (self.gate_attn.tanh() * a if self.gated else a)
        m = self.mlp(self.post_attention_layernorm(x))
        return x + (self.gate_ffn.tanh() * m if self.gated else m)


class Encoder(nn.Module):
    def __init__(self, c: VisionConfig, n: int, gated: bool):
        super().__init__()
        self.layers = nn.ModuleList(VisionLayer(c, gated) for _ in range(n))


class TileEmbedding(nn.Module):
    """Per-aspect-ratio embedding added to every token of a tile (pre/post tile positional)."""

    def __init__(self, c: VisionConfig, per_token: int):
        super().__init__()
        self.embedding = nn.Embedding(c.max_aspect_ratio_id + 1, c.max_num_tiles * per_token * c.hidden_size)
        self.gate = nn.Parameter(torch.zeros(1))


class GatedPositionalEmbedding(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        n = c.num_patches
        self.gate = nn.Parameter(torch.zeros(1))
        self.embedding = nn.Parameter(c.hidden_size**-0.5 * torch.randn(n, c.hidden_size))
        self.tile_embedding = nn.Embedding(c.max_aspect_ratio_id + 1, c.max_num_tiles * n * c.hidden_size)


class VisionTower(nn.Module):
    # One tile per frame, aspect-ratio id 1 (the 1x1 layout): tile 0 of the tile tables holds the frame.
    ASPECT_RATIO_ID = 1

    def __init__(self, c: VisionConfig, full_attention: bool, taps_are_inputs: bool, pad_tiles: bool = False):
        super().__init__()
        self.c = c
        self.full_attention = full_attention
        self.taps_are_inputs = taps_are_inputs
        # Stock Mllama (transformers and Meta's reference) runs a one-tile image as max_num_tiles tiles:
        # the frame's tile, then empty ones. Its mask only stops an empty token attending another
        # empty token, so the frame's tokens attend to the empty tiles too: their result depends on
        # them. pad_tiles runs them (max_num_tiles x the tower's work) and keeps the frame's tile.
        self.tiles = c.max_num_tiles if pad_tiles and not full_attention else 1
        self.patch_embedding = nn.Conv2d(
            c.num_channels, c.hidden_size, c.patch_size, c.patch_size, bias=False
        )
        self.class_embedding = nn.Parameter(c.hidden_size**-0.5 * torch.randn(c.hidden_size))
        self.gated_positional_embedding = GatedPositionalEmbedding(c)
        self.pre_tile_positional_embedding = TileEmbedding(c, 1)
        self.post_tile_positional_embedding = TileEmbedding(c, 1)
        self.layernorm_pre = nn.LayerNorm(c.hidden_size, eps=c.norm_eps)
        self.layernorm_post = nn.LayerNorm(c.hidden_size, eps=c.norm_eps)
        self.transformer = Encoder(c, c.num_layers, gated=False)
        self.global_transformer = Encoder(c, c.num_global_layers, gated=True)

    def _tiles(self, emb: nn.Embedding, per_token: int) -> torch.Tensor:
        """The 1x1 layout's rows for the tiles that run: (tiles, per_token, D)."""
        w = emb.weight[self.ASPECT_RATIO_ID].view(self.c.max_num_tiles, per_token, self.c.hidden_size)
        return w[: self.tiles]

    def forward(self, pixels: torch.Tensor, all_tiles: bool = False) -> torch.Tensor:
        """pixels (F, 3, S, S) normalised -> features (F, num_patches, vision_output_dim); with
        all_tiles, every tile that ran, one after the other (F, tiles * num_patches, ...)."""
        c, T = self.c, self.tiles
        w = self.patch_embedding.weight
        x = self.patch_embedding(pixels.to(w.device, w.dtype))  # (F, D, g, g)
        x = x.flatten(2).transpose(1, 2)  # (F, g*g, D)
        Fn, gg, D = x.shape
        if T > 1:  # the empty tiles: zero pixels embed to zero (the patch conv has no bias)
            x = torch.cat([x[:, None], x.new_zeros(Fn, T - 1, gg, D)], dim=1)
        else:
            x = x[:, None]
        pre = self.pre_tile_positional_embedding
        x = x + self._tiles(pre.embedding, 1) * pre.gate.tanh()  # (F, T, g*g, D)
        cls = self.class_embedding.to(x.dtype).expand(Fn, T, 1, -1)
        x = torch.cat([cls, x], dim=2)  # (F, T, n, D)
        pos = self.gated_positional_embedding
        g = pos.gate.tanh()
        x = x + (1 - g) * pos.embedding + g * self._tiles(pos.tile_embedding, c.num_patches)
        x = self.layernorm_pre(x)
        n = x.shape[2]
        pad = (8 - n % 8) % 8  # the encoder runs on a multiple of 8 tokens per tile
        x = F.pad(x, (0, 0, 0, pad)).flatten(1, 2)  # (F, T * (n + pad), D)
        mask = None
        if not self.full_attention and (pad or T > 1):
            # Stock Mllama's mask: an empty token (padding, or any token of an empty tile) may not
            # attend another empty token; everything else attends everything.
            idx = torch.arange(T * (n + pad), device=x.device)
            empty = (idx % (n + pad) >= n) | (idx >= n + pad)
            mask = ~(empty[:, None] & empty[None, :])  # True = may attend
        taps = set(c.intermediate_layers)
        tapped = []
        for i, layer in enumerate(self.transformer.layers):
            if self.taps_are_inputs and i in taps:
                tapped.append(x)
            x = layer(x, mask)
            if not self.taps_are_inputs and i in taps:
                tapped.append(x)
        x = self.layernorm_post(x)
        post = self.post_tile_positional_embedding
        x = (x.unflatten(1, (T, n + pad)) + self._tiles(post.embedding, 1) * post.gate.tanh()).flatten(1, 2)
        for layer in self.global_transformer.layers:
            x = layer(x, mask)
        inter = torch.stack(tapped, dim=-1).flatten(-2)  # (F, T*(n+pad), D*k), interleaved as Mllama
        out = torch.cat([x, inter], dim=-1)
        if all_tiles:
            return out.unflatten(1, (T, n + pad))[:, :, :n].flatten(1, 2)
        return out[:, :n]  # the frame's tile


# --------------------------------------------------------------------------------------------------
# text decoder


class MLP(nn.Module):
    def __init__(self, t: TextConfig):
        super().__init__()
        self.gate_proj = Linear(t.hidden_size, t.intermediate_size, bias=False)
        self.up_proj = Linear(t.hidden_size, t.intermediate_size, bias=False)
        self.down_proj = Linear(t.intermediate_size, t.hidden_size, bias=False)

    gate_up_weight: torch.Tensor | tuple | None = None  # Model.fuse_projections

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

    qkv_weight: torch.Tensor | tuple | None = None  # Model.fuse_projections

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

    def forward(self, x, cos, sin, cache=None, start=0, pad_mask=None):
        """x (B, T, C). With a cache (k, v each (B, KV, S, D)) the chunk is written at `start`."""
        B, T, _ = x.shape
        q, k, v = self.project_qkv(x)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if cache is None:
            o = attend(q, k, v, causal=True, mask=pad_mask)
        else:
            ck, cv = cache
            ck[:, :, start : start + T] = k
            cv[:, :, start : start + T] = v
            k, v = ck[:, :, : start + T], cv[:, :, : start + T]
            # causal, bottom-right aligned: the chunk's tokens see the whole cached prefix
            o = attend(q, k, v, causal=T > 1)
        return self.o_proj(o.transpose(1, 2).reshape(B, T, -1))


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

    def forward(self, x, k, v, mask, cos=None, sin=None):
        """x (B, T, C); k, v (B, KV, S, D) final keys/values; mask (B, 1, T, S) bool or None."""
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, T, self.h, self.d)).transpose(1, 2)  # (B, H, T, D)
        if cos is not None:  # MOSS: RoPE after q_norm, at the token's text position
            q = rotate(q, cos, sin)
        o = attend(q, k, v, causal=False, mask=mask)
        return self.o_proj(o.transpose(1, 2).reshape(B, T, -1))


class SelfAttentionLayer(nn.Module):
    def __init__(self, t: TextConfig):
        super().__init__()
        self.self_attn = SelfAttention(t)
        self.mlp = MLP(t)
        self.input_layernorm = RMSNorm(t.hidden_size, t.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(t.hidden_size, t.rms_norm_eps)

    def forward(self, x, cos, sin, cache=None, start=0, pad_mask=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, start, pad_mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class CrossAttentionLayer(nn.Module):
    def __init__(self, t: TextConfig):
        super().__init__()
        self.cross_attn = CrossAttention(t)
        self.input_layernorm = RMSNorm(t.hidden_size, t.rms_norm_eps)
        self.cross_attn_attn_gate = nn.Parameter(torch.zeros(1))
        self.mlp = MLP(t)
        self.post_attention_layernorm = RMSNorm(t.hidden_size, t.rms_norm_eps)
        self.cross_attn_mlp_gate = nn.Parameter(torch.zeros(1))

    def forward(self, x, k, v, mask, row_attn, row_mlp, cos=None, sin=None):
        """row_attn / row_mlp (B, T, 1): 0 for rows whose attention / MLP output is dropped."""
        if k is None or k.shape[2] == 0:
            return x  # no frame visible anywhere in this chunk: the layer is the identity
        a = self.cross_attn(self.input_layernorm(x), k, v, mask, cos, sin)
        x = x + self.cross_attn_attn_gate.tanh() * (a * row_attn)
        m = self.mlp(self.post_attention_layernorm(x)) * row_mlp
        return x + self.cross_attn_mlp_gate.tanh() * m


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


# --------------------------------------------------------------------------------------------------
# the model


class Model(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        v = cfg.video
        self.vision_model = VisionTower(
            cfg.vision,
            full_attention=v.vision_full_attention,
            taps_are_inputs=v.feature_taps == "layer_input",
            pad_tiles=v.pad_tiles,
        )
        self.multi_modal_projector = nn.Linear(cfg.vision.vision_output_dim, cfg.text.hidden_size)
        self.language_model = TextModel(cfg.text)
        self.lm_head = Linear(cfg.text.hidden_size, cfg.text.vocab_size, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(cfg.text), persistent=False)
        self.xattn_layers = list(cfg.text.cross_attention_layers)
        self.self_layers = [i for i in range(cfg.text.num_layers) if i not in set(self.xattn_layers)]
        self.gradient_checkpointing = False

    def fuse_projections(self) -> None:
        """Store each self-attention layer's q/k/v weights, and each MLP's gate/up weights, as one
        matrix (`qkv_weight`, `gate_up_weight`); the separate weights become views of it (no extra
        memory, state_dict unchanged), which MLP.forward and SelfAttention.project_qkv then use: 4
        matrix products per layer instead of 7 (fewer launches, longer rows; the GPU decode step).
        int8 layers (engine.quant) fuse their int8 rows and scales the same way, as a pair.
        Inference only. Idempotent."""
        with torch.no_grad():
            for layer in self.language_model.layers:
                mods = [(layer.mlp, ("gate_proj", "up_proj"), "gate_up_weight")]
                if isinstance(layer, SelfAttentionLayer):
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

    # ---- perception ------------------------------------------------------------------------------
    @property
    def tokens_per_frame(self) -> int:
        return self.cfg.tokens_per_frame

    # (vision tower, projector) in FP8 for batched perception (engine.loading.quantize_fp8_vision), or
    # None. A plain tuple: not a submodule, so the state dict and .to() do not see it.
    fp8_vision: tuple[nn.Module, nn.Module] | None = None

    def encode_frames(self, pixels: torch.Tensor, fp8: bool = False, all_tiles: bool = False) -> torch.Tensor:
        """pixels (F, 3, S, S) normalised -> cross-attention states (F, N, C): tower, pool, projector.
        fp8: through the FP8 copy of the tower and projector when the model has one. all_tiles: the
        empty tiles' states after the frame's (stock, pad_tiles; see VisionTower)."""
        tower, projector = self.vision_model, self.multi_modal_projector
        if fp8 and self.fp8_vision is not None:
            tower, projector = self.fp8_vision
        feats = tower(pixels, all_tiles=all_tiles)  # (F, 1 + g*g, Dv)
        s = self.cfg.video.pool_stride
        if s > 1:
            # MOSS: keep CLS, average-pool the patch grid (g x g -> g/s x g/s) before the projector.
            g = self.cfg.vision.grid
            cls, grid = feats[:, :1], feats[:, 1:]
            grid = grid.unflatten(1, (g, g)).permute(0, 3, 1, 2)  # (F, Dv, g, g)
            grid = F.avg_pool2d(grid, s, s).flatten(2).transpose(1, 2)  # (F, (g/s)^2, Dv)
            feats = torch.cat([cls, grid], dim=1)
        return projector(feats)

    def project_memory(self, states: torch.Tensor):
        """states (F, N, C) -> (k, v) each (F, Lx, N, KV, D).

        Stock mode: keys are final (k_norm applied). MOSS mode: keys are raw projections; the
        generation thread applies RoPE at the frame's text position and then k_norm (`finalize_keys`).
        """
        ks, vs = [], []
        for i in self.xattn_layers:
            xa = self.language_model.layers[i].cross_attn
            k, v = xa.project_kv(states)
            if not self.cfg.video.xattn_rope:
                k = xa.k_norm(k)
            ks.append(k)
            vs.append(v)
        return torch.stack(ks, 1), torch.stack(vs, 1)

    def finalize_keys(self, k: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """k (F, Lx, N, KV, D) raw (MOSS) -> final keys; pos (F,) text positions of the frames' <|image|>.

        Order matters: k_norm has learned weights and does not commute with the rotation:
        key = k_norm(RoPE(k_proj(x), frame_pos)).
        """
        if not self.cfg.video.xattn_rope:
            return k
        cos, sin = rope_cos_sin(self.inv_freq, pos, k.dtype)  # (F, D)
        k = rotate(k, cos[:, None, None, None, :], sin[:, None, None, None, :])
        out = torch.empty_like(k)
        for j, i in enumerate(self.xattn_layers):
            out[:, j] = self.language_model.layers[i].cross_attn.k_norm(k[:, j])
        return out

    # ---- text ------------------------------------------------------------------------------------
    def forward_text(self, ids, pos, xkv, xmask, row_attn, row_mlp, cache=None, start=0, pad_mask=None):
        """Run the decoder over a chunk.

        ids, pos (B, T); xkv: per cross-attention layer (k, v) each (B, KV, S, D) or None;
        xmask (B, 1, T, S) bool or None (None = every row sees all S keys);
        row_attn, row_mlp (B, T, 1) float; cache: per self-attention layer (k, v) or None.
        Returns final-normed hidden states (B, T, C).
        """
        lm = self.language_model
        x = lm.embed_tokens(ids)
        cos, sin = rope_cos_sin(self.inv_freq, pos, x.dtype)  # (B, T, D)
        cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
        xcos = xsin = None
        if self.cfg.video.xattn_rope:
            xcos, xsin = cos, sin
        xi = si = 0
        for layer in lm.layers:
            if isinstance(layer, CrossAttentionLayer):
                k, v = xkv[xi] if xkv is not None else (None, None)
                args = (x, k, v, xmask, row_attn, row_mlp, xcos, xsin)
                xi += 1
            else:
                c = cache[si] if cache is not None else None
                args = (x, cos, sin, c, start, pad_mask)
                si += 1
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, *args, use_reentrant=False)
            else:
                x = layer(*args)
        return lm.norm(x)

    # ---- offline ---------------------------------------------------------------------------------
    def frame_memory(self, pixel_values, frames_per_sample, image_pos, flat_pos, all_tiles=False):
        """Encode frames of a batch and lay them out per sample.

        pixel_values (sumF, 3, S, S); frames_per_sample list[int]; image_pos (B, Fmax) text positions of
        each sample's frames; flat_pos (sumF,) the same positions, sample after sample.
        Returns xkv per layer (B, KV, Fmax*N, D).
        """
        states = self.encode_frames(pixel_values, all_tiles=all_tiles)  # (sumF, N, C)
        k, v = self.project_memory(states)  # (sumF, Lx, N, KV, D)
        k = self.finalize_keys(k, flat_pos)
        B, Fmax = image_pos.shape
        N, Lx = states.shape[1], len(self.xattn_layers)
        kv_heads, d = k.shape[-2], k.shape[-1]
        # one scatter into the padded (B * Fmax) layout: per-sample slice assignments would make
        # autograd copy the whole padded tensor once per sample (quadratic in the batch)
        dest = torch.cat([torch.arange(n) + b * Fmax for b, n in enumerate(frames_per_sample)]).to(k.device)
        kb = k.new_zeros(B * Fmax, Lx, N, kv_heads, d).index_copy(0, dest, k)
        vb = v.new_zeros(B * Fmax, Lx, N, kv_heads, d).index_copy(0, dest, v)
        # (B, Fmax, Lx, N, KV, D) -> per layer (B, KV, Fmax*N, D)
        kb = (
            kb.view(B, Fmax, Lx, N, kv_heads, d)
            .permute(2, 0, 4, 1, 3, 5)
            .reshape(Lx, B, kv_heads, Fmax * N, d)
        )
        vb = (
            vb.view(B, Fmax, Lx, N, kv_heads, d)
            .permute(2, 0, 4, 1, 3, 5)
            .reshape(Lx, B, kv_heads, Fmax * N, d)
        )
        return [(kb[i], vb[i]) for i in range(Lx)]

    def hidden_states(self, input_ids, pixel_values=None, frames_per_sample=None, pad_mask=None):
        """Offline pass over whole sequences. input_ids (B, T) with one image token per frame."""
        B, T = input_ids.shape
        dev = input_ids.device
        is_img = input_ids == self.cfg.video.image_token_id
        n_vis = is_img.long().cumsum(1)  # (B, T) frames visible to each token (prefix visibility)
        if frames_per_sample is None:
            frames_per_sample = is_img.sum(1).tolist()
        Fmax = max(frames_per_sample) if frames_per_sample else 0
        pos = torch.arange(T, device=dev).expand(B, T)
        xkv = xmask = None
        row = (n_vis > 0).to(self.language_model.embed_tokens.weight.dtype)[..., None]  # (B, T, 1)
        row_attn, row_mlp = row, row
        if Fmax > 0 and pixel_values is not None:
            counts = is_img.sum(1).tolist()
            if counts != list(frames_per_sample):
                raise ValueError(
                    f"image tokens per sample {counts} differ from frames per sample {frames_per_sample}"
                )
            nz = is_img.nonzero()  # (sumF, 2): (sample, position), sample after sample, in order
            first = torch.tensor([0] + counts[:-1], device=dev).cumsum(0)  # first frame of each sample
            j = torch.arange(len(nz), device=dev) - first[nz[:, 0]]
            image_pos = torch.full((B, Fmax), -1, dtype=torch.long, device=dev)
            image_pos[nz[:, 0], j] = nz[:, 1]
            # stock Mllama lets rows that see no frame attend to the empty tiles too (below)
            all_tiles = (
                self.cfg.video.empty_rows == "all"
                and self.vision_model.tiles > 1
                and bool((n_vis == 0).any())
            )
            xkv = self.frame_memory(pixel_values, frames_per_sample, image_pos, nz[:, 1], all_tiles)
            N = self.tokens_per_frame * (self.vision_model.tiles if all_tiles else 1)
            key_frame = torch.arange(Fmax * N, device=dev) // N  # (S,)
            see = n_vis.clone()
            if self.cfg.video.empty_rows == "all":
                # Stock Mllama's behaviour: rows that see no frame attend to all of the sample's frames
                # (their MLP output is still dropped).
                nf = torch.tensor(frames_per_sample, device=dev)[:, None].expand(B, T)
                see = torch.where(n_vis == 0, nf, n_vis)
                row_attn = (see > 0).to(row.dtype)[..., None]
            else:
                see = see.clamp(min=1)  # avoid fully masked rows (NaN); their output is zeroed by row_attn
            xmask = key_frame[None, None, :] < see[:, :, None]  # (B, T, S)
            if all_tiles:  # a row that sees frames sees their own tiles; the empty tiles only empty rows
                own = torch.arange(Fmax * N, device=dev) % N < self.tokens_per_frame
                xmask = xmask & (own[None, None, :] | (n_vis == 0)[:, :, None])
            xmask = xmask[:, None]  # (B, 1, T, S)
        h = self.forward_text(input_ids, pos, xkv, xmask, row_attn, row_mlp, pad_mask=pad_mask)
        return h

    def logits(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (1, T) with one <|image|> per frame; pixel_values (F, 3, H, W) normalised.
        Returns full-sequence logits (1, T, vocab) in float32."""
        return self.lm_head(self.hidden_states(input_ids, pixel_values)).float()

    def forward(self, input_ids, pixel_values=None, frames_per_sample=None, pad_mask=None):
        return self.lm_head(self.hidden_states(input_ids, pixel_values, frames_per_sample, pad_mask))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

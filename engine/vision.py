"""The vision tower of Llama-3.2-Vision ("Mllama"): patch embedding, tile and position embeddings,
a local encoder whose chosen layers are tapped, a gated global encoder. A frame in, its patch
features (with the tapped layers) out; engine.model pools and projects them into the text width.
Parameter names follow the HF checkpoint layout (vision_model.*)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.attention import attend
from engine.config import VisionConfig


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

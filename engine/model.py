"""The whole network: the vision tower (engine.vision), pooling, the projector, the text decoder with
gated cross-attention layers (engine.decoder), for Llama-3.2-Vision ("Mllama") and the
MOSS-Video-Preview variant. Three entry points:
- `encode_frames(pixels)` -> cross-attention states, `project_memory(states)` -> per-layer K/V
  (the perception channel: run once per frame, engine.perception);
- `forward_text(...)` -> hidden states for a chunk of tokens against a KV cache and a visual memory
  (the generation channel; prefill and decode-one-token live in engine/generation.py);
- `logits(input_ids, pixel_values)` -> full-sequence logits in one offline pass (tests, training).

Parameter names follow the HF checkpoint layout (vision_model.*, language_model.*,
multi_modal_projector.*, lm_head.*) so loading is a rename of prefixes only. It knows nothing of
files, tokenizers, threads or sampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import ModelConfig
from engine.decoder import Eager, Linear, TextModel, rope_cos_sin, rope_inv_freq, rotate, run_layers
from engine.vision import VisionTower


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
        """q/k/v and gate/up as one matrix each (engine.decoder.TextModel.fuse_projections)."""
        self.language_model.fuse_projections()

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
        """Run the decoder over a chunk (engine.decoder.Eager).

        ids, pos (B, T); xkv: per cross-attention layer (k, v) each (B, KV, S, D) or None;
        xmask (B, 1, T, S) bool or None (None = every row sees all S keys);
        row_attn, row_mlp (B, T, 1) float; cache: per self-attention layer (k, v) or None.
        Returns final-normed hidden states (B, T, C).
        """
        lm = self.language_model
        x = lm.embed_tokens(ids)
        cos, sin = rope_cos_sin(self.inv_freq, pos, x.dtype)  # (B, T, D)
        ex = Eager(
            cos[:, None],
            sin[:, None],
            xkv,
            xmask,
            row_attn,
            row_mlp,
            self.cfg.video.xattn_rope,
            cache,
            start,
            pad_mask,
        )
        call = None
        if self.gradient_checkpointing and self.training:

            def call(layer, x, ex, n):
                return torch.utils.checkpoint.checkpoint(layer, x, ex, n, use_reentrant=False)

        return lm.norm(run_layers(ex, lm.layers, x, call))

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

"""Preallocated caches: the self-attention KV cache and the visual (cross-attention) memory.

Visual memory layout, per cross-attention layer: keys and values (1, KV, C*N, D) at the number of KV
heads (not repeated, trap 3), C frame slots of N tokens, contiguous, so attention reads the visible
prefix `[:, :, :visible*N]` as a view: no copy, no mask (traps 1, 2, 4).

Who writes what:
- the perception thread writes a frame's raw K/V into a *staging* slot (`stage`), never into the
  visible slots, so it can never race with attention reads;
- the generation thread `commit`s a staged frame when it inserts the frame's `<|image|>` token at text
  position p: MOSS keys get RoPE(p) then k_norm (microseconds), stock keys are copied as they are.

Bound: when all C slots are full the oldest frame's slot is reused (sliding window), except the first
`keep_first` frames which stay (the opening of the scene). Raw keys are kept per slot (MOSS) so kept
frames can be re-positioned exactly when the text context is compacted. It knows nothing of tokens,
threads or sampling.
"""

from __future__ import annotations

import torch

from engine.config import ModelConfig


class KVCache:
    """Self-attention cache: per self-attention layer k, v (B, KV, S, D), preallocated."""

    def __init__(self, cfg: ModelConfig, max_len: int, dtype, device, batch: int = 1):
        t = cfg.text
        n_self = t.num_layers - len(t.cross_attention_layers)
        self.k = torch.zeros(n_self, batch, t.num_kv_heads, max_len, t.head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.max_len = max_len
        self.length = 0  # tokens written = next text position

    def layers(self):
        return [(self.k[i], self.v[i]) for i in range(self.k.shape[0])]

    def reset(self):
        self.length = 0

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    @staticmethod
    def planned_bytes(cfg: ModelConfig, max_len: int, item_size: int, batch: int = 1) -> int:
        """What __init__ allocates, before allocating it (the keys and values of every self layer)."""
        t = cfg.text
        n_self = t.num_layers - len(t.cross_attention_layers)
        return 2 * n_self * batch * t.num_kv_heads * max_len * t.head_dim * item_size


class VisualMemory:
    def __init__(
        self,
        cfg: ModelConfig,
        capacity: int,
        dtype,
        device,
        staging: int = 8,
        keep_first: int = 0,
        store_dtype=None,
    ):
        """dtype: the K/V perception writes (staging, raw keys); store_dtype: the committed memory's K/V
        (default dtype; bfloat16 under the CPU decode step where it is native, engine.cpustep)."""
        if capacity < 1:
            raise ValueError("visual memory capacity must be at least one frame")
        if not 0 <= keep_first < capacity:
            raise ValueError("keep_first must be smaller than the capacity")
        t = cfg.text
        self.cfg = cfg
        self.C, self.N = capacity, cfg.tokens_per_frame
        self.L = len(t.cross_attention_layers)
        kv, d = t.num_kv_heads, t.head_dim
        self.k = torch.zeros(self.L, 1, kv, self.C * self.N, d, dtype=store_dtype or dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.rope = cfg.video.xattn_rope
        # raw (un-rotated) keys per slot, to re-position frames exactly (MOSS only)
        self.k_raw = (
            torch.zeros(self.C, self.L, self.N, kv, d, dtype=dtype, device=device) if self.rope else None
        )
        self.stage_k = torch.zeros(staging, self.L, self.N, kv, d, dtype=dtype, device=device)
        self.stage_v = torch.zeros_like(self.stage_k)
        self.stage_events: list = [None] * staging  # CUDA: perception finished writing the slot
        self.consumed_events: list = [None] * staging  # CUDA: generation finished reading the slot
        self.keep_first = keep_first
        self.slot_pos = torch.full((self.C,), -1, dtype=torch.long)  # text position of each slot's frame
        # which memory tokens hold a committed frame: the fixed-shape view a CUDA graph attends through
        self.valid = torch.zeros(self.C * self.N, dtype=torch.bool, device=device)
        self.slot_frame = [-1] * self.C  # frame number held by each slot
        self.committed = 0  # frames committed so far (also the next frame number)
        self.evicted = 0

    # ---- sizes -----------------------------------------------------------------------------------
    @staticmethod
    def planned_bytes(cfg: ModelConfig, capacity: int, item_size: int, staging: int = 8) -> int:
        """What __init__ allocates, before allocating it: the committed keys and values, the raw keys
        kept for re-positioning (MOSS), the staging slots (the small validity mask left out)."""
        t = cfg.text
        per_frame = len(t.cross_attention_layers) * cfg.tokens_per_frame * t.num_kv_heads * t.head_dim
        raw = capacity if cfg.video.xattn_rope else 0
        return per_frame * item_size * (2 * capacity + raw + 2 * staging)

    @property
    def visible(self) -> int:
        return min(self.committed, self.C)

    @property
    def nbytes(self) -> int:
        n = 2 * self.stage_k.numel() + (self.k_raw.numel() if self.k_raw is not None else 0)
        return n * self.stage_k.element_size() + 2 * self.k.numel() * self.k.element_size()

    def views(self):
        """Per layer (k, v) each (1, KV, visible*N, D): views, no copy."""
        n = self.visible * self.N
        return [(self.k[i, :, :, :n], self.v[i, :, :, :n]) for i in range(self.L)]

    def slot_for(self, frame: int) -> int:
        if frame < self.C:
            return frame
        k = self.keep_first
        return k + (frame - k) % (self.C - k)

    def last_frame(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The newest committed frame's raw K/V (Lx, N, KV, D), as perception staged them: to show the
        model its last frame again (a question asked after the video ended). None before any frame."""
        if self.committed == 0:
            return None
        s = self.slot_for(self.committed - 1)
        cols = slice(s * self.N, (s + 1) * self.N)
        v = self.v[:, 0, :, cols].permute(0, 2, 1, 3)
        k = self.k_raw[s] if self.rope else self.k[:, 0, :, cols].permute(0, 2, 1, 3)
        return k.to(self.stage_k.dtype).clone(), v.to(self.stage_v.dtype).clone()

    # ---- perception side -------------------------------------------------------------------------
    def stage(self, i: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write one frame's raw K/V (Lx, N, KV, D) into staging slot i (perception thread)."""
        done = self.consumed_events[i]
        if done is not None:
            # The ring freed this slot when the generation thread had *enqueued* its commit; the GPU
            # may not have run that copy yet. Order our write after it (no host sync).
            torch.cuda.current_stream().wait_event(done)
        self.stage_k[i].copy_(k, non_blocking=True)
        self.stage_v[i].copy_(v, non_blocking=True)
        if self.stage_k.is_cuda:
            ev = torch.cuda.Event()
            ev.record()
            self.stage_events[i] = ev

    # ---- generation side -------------------------------------------------------------------------
    def commit(self, model, k: torch.Tensor, v: torch.Tensor, text_pos: int) -> int:
        """Make a frame visible at `text_pos` (its <|image|> position). k, v (Lx, N, KV, D). Returns its slot."""
        frame = self.committed
        s = self.slot_for(frame)
        if self.slot_frame[s] >= 0:
            self.evicted += 1
        self._write(model, s, k, v, text_pos)
        self.slot_frame[s] = frame
        self.committed += 1
        return s

    def commit_staged(self, model, i: int, text_pos: int) -> int:
        ev = self.stage_events[i]
        if ev is not None:  # perception ran on its own stream: order after it without a host sync
            torch.cuda.current_stream().wait_event(ev)
        s = self.commit(model, self.stage_k[i], self.stage_v[i], text_pos)
        if self.stage_k.is_cuda:
            done = torch.cuda.Event()
            done.record()
            self.consumed_events[i] = done
        return s

    def commit_many(self, model, ks: list, vs: list, text_pos: list[int], chunk: int = 32) -> None:
        """commit() of several frames in order, batched where their slots are consecutive (an offline
        hand-over of many frames: one key finalisation and one copy per chunk, not per frame)."""
        n = len(text_pos)
        slots = [self.slot_for(self.committed + j) for j in range(n)]
        if n < 2 or n > self.C or slots != list(range(slots[0], slots[0] + n)):
            for k, v, p in zip(ks, vs, text_pos, strict=True):
                self.commit(model, k, v, p)
            return
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            self.evicted += sum(self.slot_frame[slots[j]] >= 0 for j in range(a, b))
            self._write(model, slots[a], torch.stack(ks[a:b]), torch.stack(vs[a:b]), text_pos[a:b])
            for j in range(a, b):
                self.slot_frame[slots[j]] = self.committed
                self.committed += 1

    def _write(self, model, s: int, k, v, text_pos) -> None:
        """Frame(s) into slots s.. : k, v (Lx, N, KV, D) with one text position, or (m, Lx, N, KV, D)
        with m positions (consecutive slots)."""
        if k.dim() == 4:
            k, v, text_pos = k[None], v[None], [text_pos]
        m, L, N, KV, D = k.shape
        if self.rope:
            self.k_raw[s : s + m].copy_(k)
            k = model.finalize_keys(k, torch.tensor(text_pos, device=k.device))
        # (m, Lx, N, KV, D) -> (Lx, KV, m*N, D) into the slots' token range
        self.k[:, 0, :, s * N : (s + m) * N].copy_(k.permute(1, 3, 0, 2, 4).reshape(L, KV, m * N, D))
        self.v[:, 0, :, s * N : (s + m) * N].copy_(v.permute(1, 3, 0, 2, 4).reshape(L, KV, m * N, D))
        self.slot_pos[s : s + m] = torch.tensor(text_pos)
        self.valid[s * N : (s + m) * N] = True

    def frames_by_position(self) -> list[tuple[int, int, int]]:
        """(text_pos, frame, slot) of the visible frames, oldest first."""
        return sorted((int(self.slot_pos[s]), self.slot_frame[s], s) for s in range(self.visible))

    def reposition(self, model, keep: dict[int, int]) -> None:
        """Keep only frames in `keep` (frame number -> new text position), compacted into slots 0..m-1.

        Used when the text context is compacted: kept frames get their keys re-rotated exactly from the
        raw keys (MOSS); dropped frames leave the memory.
        """
        olds = [(f, s) for (_, f, s) in self.frames_by_position() if f in keep]
        raw_k = [(self.k_raw[s].clone() if self.rope else None) for _, s in olds]
        # values and (stock) final keys, per slot: (Lx, N, KV, D)
        N = self.N
        vs = [self.v[:, 0, :, s * N : (s + 1) * N].transpose(1, 2).clone() for _, s in olds]
        ks = [self.k[:, 0, :, s * N : (s + 1) * N].transpose(1, 2).clone() for _, s in olds]
        self.slot_frame = [-1] * self.C
        self.slot_pos.fill_(-1)
        self.valid.fill_(False)
        for j, (f, _) in enumerate(olds):
            self._write(model, j, raw_k[j] if self.rope else ks[j], vs[j], keep[f])
            self.slot_frame[j] = j  # internal frame numbers restart at the compacted block
        self.committed = len(olds)

    def reset(self) -> None:
        self.committed = 0
        self.evicted = 0
        self.slot_frame = [-1] * self.C
        self.slot_pos.fill_(-1)
        self.valid.fill_(False)

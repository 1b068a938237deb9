"""Perception: frames in, visual-memory entries out.

The frame path, one step a function, in order:
1. `engine.preprocess.batch_pixels`: a picture (H, W, 3 uint8 RGB) -> normalised pixels at the tower's
   size (the reference processor's resize for real checkpoints, the fast one for the bundled model);
2. `Model.encode_frames`: vision tower (engine.vision), pooling, projector -> cross-attention states;
3. `Model.project_memory`: each cross-attention layer's keys and values of the frame, computed once;
4. `VisualMemory.stage` (live) or `VisualMemory.commit_many` (offline): into the memory the generation
   channel reads (the keys get RoPE and k_norm at the frame's text position when committed).

`Perceiver` is what the session's perception thread calls for one live frame (steps 1-4, on its own CUDA
stream, one CUDA graph per frame on a GPU); `perceive` is steps 2-3 for a batch (offline hand-over,
evaluation, benchmarks).
"""

from __future__ import annotations

import contextlib
import functools
import weakref

import numpy as np
import torch

from engine.model import Model
from engine.novelty import WorldCheck, frame_features
from engine.preprocess import batch_pixels


def perceive(
    model: Model, pixels: torch.Tensor, batch: int | None = None, compile: bool = False, features=False
):
    """pixels (F, 3, S, S) -> raw memory K/V (F, Lx, N, KV, D): the perception channel's work.
    `batch`: encode in chunks of this many frames (offline hand-over of many frames at once).
    `compile`: through torch.compile (inductor fuses the tower's norms, GELU and residuals; the first
    call of each batch shape compiles for a minute or so; falls back to eager if compilation fails).
    Goes through the model's FP8 tower when it has one (`quantize_fp8_vision`). features: also each
    frame's engine.novelty features (F, 2C), for a WorldCheck, as a third result."""
    encode = _compiled_encoder(model) if compile else functools.partial(model.encode_frames, fp8=True)
    step = batch if batch is not None else max(1, len(pixels))
    parts = []
    with torch.inference_mode():
        for i in range(0, max(len(pixels), 1), step):  # an empty batch gives empty K/V, as the tower does
            states = encode(pixels[i : i + step])
            parts.append((*model.project_memory(states), *([frame_features(states)] if features else [])))
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))


def perceive_images(model: Model, images, chunk: int = 32, features: bool = False):
    """Pictures (H, W, 3 uint8 RGB) -> `perceive`'s results, `chunk` pictures at a time (pixels of a
    long video at 560 px would not fit at once)."""
    size, resize = model.cfg.vision.image_size, model.cfg.video.resize
    parts = [
        perceive(model, batch_pixels(list(images[i : i + chunk]), size, resize), features=features)
        for i in range(0, len(images), chunk)
    ]
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its compiled encoder


def _compiled_encoder(model: Model):
    fn = _COMPILED.get(model)
    if fn is None:
        eager = functools.partial(model.encode_frames, fp8=True)
        compiled = torch.compile(eager, dynamic=False)

        def fn(px):
            nonlocal compiled
            try:
                return compiled(px)
            except Exception as e:  # a compiler problem must not stop perception
                print(f"torch.compile of the vision tower failed ({type(e).__name__}: {e}); eager used")
                compiled = eager
                return compiled(px)

        _COMPILED[model] = fn
    return fn


def forget_compiled_encoder(model: Model) -> None:
    """Drop the model's compiled encoder (its tower changed: quantize_fp8_vision)."""
    _COMPILED.pop(model, None)


class GraphPerception:
    """Perceive one frame (vision tower, projector, the cross-attention K/V projections) with fixed
    shapes, replayed as a CUDA graph; eager elsewhere.

    Why: one live frame through ViT-H is ~800 small kernels; launched one by one from Python the
    perception thread is launch-bound (about twice the GPU time). Captured once, a frame is one
    launch. Call it from the thread and stream that perceive; the returned K/V are static buffers,
    overwritten by the next call: copy them out (VisualMemory.stage) before perceiving again."""

    def __init__(self, model: Model, device, dtype, use_graph: bool | None = None, features: bool = False):
        """features: also compute each frame's engine.novelty features (for a WorldCheck)."""
        self.model, self.with_features = model, features
        self.features = None
        S = model.cfg.vision.image_size
        self.px = torch.zeros(1, 3, S, S, device=device, dtype=dtype)
        self.use_graph = torch.device(device).type == "cuda" if use_graph is None else use_graph
        self.graph = None
        self.out = None

    def _run(self, px):
        states = self.model.encode_frames(px)
        return (*self.model.project_memory(states), frame_features(states) if self.with_features else None)

    @torch.inference_mode()
    def capture(self):
        for _ in range(2):  # warm-up (cuDNN/cuBLAS plans, allocator) on the caller's stream
            self._run(self.px)
        torch.cuda.current_stream().synchronize()
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the generation thread keeps launching (and may capture) meanwhile
        cur = torch.cuda.current_stream()
        side = None if cur == torch.cuda.default_stream() else cur  # never capture on the legacy stream
        with torch.cuda.graph(self.graph, stream=side, capture_error_mode="thread_local"):
            self.out = self._run(self.px)

    @torch.inference_mode()
    def __call__(self, px: torch.Tensor):
        """px (1, 3, S, S) normalised pixels (any device) -> k, v each (1, Lx, N, KV, D); the frame's
        engine.novelty features are left in `self.features` (1, 2C)."""
        if not self.use_graph:
            k, v, self.features = self._run(px.to(self.px.device, self.px.dtype))
            return k, v
        self.px.copy_(px, non_blocking=True)
        if self.graph is None:
            try:
                self.capture()
            except RuntimeError as e:  # e.g. an op that cannot be captured: perceive eagerly instead
                print(f"CUDA graph capture of perception failed ({e}); perceiving eagerly")
                self.graph, self.use_graph = None, False
                k, v, self.features = self._run(self.px)
                return k, v
        self.graph.replay()
        k, v, self.features = self.out
        return k, v


class Perceiver:
    """The live frame path for one visual memory: a picture in, its K/V staged into a free slot.
    Runs on the caller's thread (the session's perception thread) and, on a GPU, its own CUDA stream,
    so perception never waits for generation."""

    def __init__(self, model: Model, memory, world_check: WorldCheck | None = None):
        self.model, self.memory, self.world_check = model, memory, world_check
        self.size, self.resize = model.cfg.vision.image_size, model.cfg.video.resize
        self.stream = torch.cuda.Stream() if memory.k.is_cuda else None
        # a CUDA graph on GPU, eager on CPU
        self.encode = GraphPerception(
            model, memory.k.device, memory.stage_k.dtype, features=world_check is not None
        )

    def stage(self, slot: int, image: np.ndarray) -> bool | None:
        """Perceive `image` into staging slot `slot` of the memory (committed later by the decoder).
        Returns whether the frame looks like the model's training world (None: the checkpoint has no
        world check)."""
        with (
            torch.inference_mode(),
            torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext(),
        ):
            # the upload is enqueued on the perception stream too, so the encoder reads it in order
            k, v = self.encode(batch_pixels([image], self.size, self.resize))
            self.memory.stage(slot, k[0], v[0])
            if self.world_check is None:
                return None
            return self.world_check.familiar(self.encode.features)[0]

"""Frame preprocessing: an RGB uint8 image -> one normalised square tile (3, S, S).

As the reference processor (transformers' Mllama image processor) does for one tile: resize keeping
the aspect ratio to fit S x S, zero-pad bottom/right, rescale to [0, 1], normalise with the CLIP
mean/std. Two resizes:
- "reference" (real checkpoints): the processor's own. Sizes are floored from its float scale, the
  image is scaled so its long side is exactly S (small frames are enlarged), and the resampling is
  PIL's bilinear filter (antialiased when shrinking). Pixel values equal the processor's (a test).
- "fast" (the bundled model, trained on it): OpenCV, rounded sizes, INTER_AREA when shrinking.
It knows nothing of models.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


RESIZES = ("reference", "fast")


def reference_size(h: int, w: int, size: int) -> tuple[int, int]:
    """The Mllama processor's size for one tile (its get_image_size_fit_to_canvas with a size x size
    canvas): the long side becomes `size`, the other is floored from the same float scale."""
    if size / w < size / h:
        return min(math.floor(h * (size / w)) or 1, size), size
    return size, min(math.floor(w * (size / h)) or 1, size)


def fit_tile(image: np.ndarray, size: int, resize: str = "fast") -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, aspect kept, padded bottom/right with zeros."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = image[:, :, :3]
    h, w = image.shape[:2]
    if resize == "reference":
        nh, nw = reference_size(h, w, size)
        if (nh, nw) != (h, w):
            from PIL import Image

            image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((nw, nh), Image.BILINEAR))
    elif resize == "fast":
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        if (nh, nw) != (h, w):
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            image = cv2.resize(image, (nw, nh), interpolation=interp)
    else:
        raise ValueError(f"resize must be one of {RESIZES}, not {resize!r}")
    out = np.zeros((size, size, 3), dtype=np.uint8)
    out[:nh, :nw] = image
    return out


def to_pixels(image: np.ndarray, size: int, resize: str = "fast") -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, size, size) float32 normalised."""
    x = fit_tile(image, size, resize).astype(np.float32) / 255.0
    x = (x - CLIP_MEAN) / CLIP_STD
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


def batch_pixels(images, size: int, resize: str = "fast") -> torch.Tensor:
    """list of (H, W, 3) uint8 -> (F, 3, size, size). `resize`: the model's (cfg.video.resize)."""
    if len(images) == 0:
        return torch.zeros(0, 3, size, size)
    return torch.stack([to_pixels(im, size, resize) for im in images])

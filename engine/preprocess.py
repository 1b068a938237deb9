"""Frame preprocessing: an RGB uint8 image -> one normalised square tile (3, S, S).

As the reference processor does for one tile: resize keeping the aspect ratio to fit S x S, zero-pad
bottom/right, rescale to [0, 1], normalise with the CLIP mean/std. It knows nothing of models.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def fit_tile(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, aspect kept, padded bottom/right with zeros."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (nw, nh), interpolation=interp)
    out = np.zeros((size, size, 3), dtype=np.uint8)
    out[:nh, :nw] = image[:, :, :3]
    return out


def to_pixels(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, size, size) float32 normalised."""
    x = fit_tile(image, size).astype(np.float32) / 255.0
    x = (x - CLIP_MEAN) / CLIP_STD
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


def batch_pixels(images, size: int) -> torch.Tensor:
    """list of (H, W, 3) uint8 -> (F, 3, size, size)."""
    if len(images) == 0:
        return torch.zeros(0, 3, size, size)
    return torch.stack([to_pixels(im, size) for im in images])

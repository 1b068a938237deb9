"""Is a frame like the world the checkpoint was trained on?

The bundled model knows one world (coloured shapes over a textured background). Shown a camera, a
screen of text or a film, it does not stay quiet: it describes shapes that are not there. A
`WorldCheck` measures how far a frame's cross-attention states (their mean and spread over the frame's
tokens, the model's own view of it) lie from those of its training world: a Mahalanobis distance
under a Gaussian fitted to world frames, with a threshold set on other world frames. Streams whose
frames lie beyond it are "outside the model's world": the decoder (engine.generation) keeps the model
quiet there and answers a question with the checkpoint's own plain sentence (generation.json
`out_of_world_answer`), and the session says so once.

The statistics are fitted on held-out world streams (seeds 9000-9199: never trained on, and apart from
the evaluation's 1000-1199) and stored beside the weights as world_check.safetensors:

    python -m engine.eval.novelty --model assets/model      # fit, write, and print how it separates
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

FILE = "world_check.safetensors"
SHRINK = 0.01  # covariance shrinkage (a fraction of the mean variance): 512 features, ~3000 frames
MARGIN = 1.25  # threshold = MARGIN x the largest distance of a threshold-setting world frame


def frame_features(states: torch.Tensor) -> torch.Tensor:
    """(F, N, C) cross-attention states -> (F, 2C) float64: their mean and spread over the tokens."""
    s = states.double()
    return torch.cat([s.mean(1), s.std(1)], -1)


@dataclass(frozen=True)
class WorldCheck:
    mean: torch.Tensor  # (2C,) float64
    precision: torch.Tensor  # (2C, 2C) float64: the inverse of the shrunk covariance
    threshold: float  # distances above it are outside the world

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """(F, 2C) -> (F,) squared Mahalanobis distances."""
        y = features.double().cpu() - self.mean
        return ((y @ self.precision) * y).sum(-1)

    def familiar(self, features: torch.Tensor) -> list[bool]:
        return [bool(d <= self.threshold) for d in self.distance(features)]

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(folder) / FILE
        tensors = {
            "mean": self.mean,
            "precision": self.precision,
            "threshold": torch.tensor([self.threshold]),
        }
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})
        return path

    @staticmethod
    def load(folder: str | Path) -> WorldCheck | None:
        """The folder's check, or None when it has none (every real checkpoint: they know the world)."""
        path = Path(folder) / FILE
        if not path.is_file():
            return None
        from safetensors.torch import load_file

        t = load_file(str(path))
        return WorldCheck(t["mean"].double(), t["precision"].double(), float(t["threshold"][0]))


def fit(fit_features: torch.Tensor, check_features: torch.Tensor, shrink=SHRINK, margin=MARGIN) -> WorldCheck:
    """A Gaussian of world frames' features (covariance shrunk towards its mean variance), and a
    threshold `margin` x the largest distance of other world frames."""
    x = fit_features.double()
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / len(x)
    cov += shrink * cov.diagonal().mean() * torch.eye(len(mean), dtype=torch.float64)
    wc = WorldCheck(mean, torch.linalg.inv(cov), 0.0)
    return WorldCheck(mean, wc.precision, margin * float(wc.distance(check_features).max()))

"""The engine: model, visual memory, generation, runtime, data, training, evaluation, benchmarks.

It knows nothing of Qt. It imports with only torch, transformers, numpy, safetensors, pyyaml and
opencv-python-headless installed. Heavy submodules load lazily so `import engine` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "load_model": "engine.loading",
    "load_checkpoint": "engine.loading",
    "Checkpoint": "engine.checkpoint",
    "save_model": "engine.loading",
    "LoadError": "engine.loading",
    "ModelConfig": "engine.config",
    "Model": "engine.model",
    "Tokenizer": "engine.tokenizer",
    "Session": "engine.session",
    "SessionConfig": "engine.session",
    "StreamDecoder": "engine.generation",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)


__all__ = list(_LAZY)

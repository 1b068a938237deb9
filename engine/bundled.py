"""The embedded default model and demo video shipped in assets/.

`load_default_checkpoint()` loads assets/model (our small model of the reference architecture, trained on
procedurally generated videos). If it is not there (a checkout before the trained model landed), it
builds a tiny *random* model of the same architecture so the app still runs end to end, and marks it
`trained = False` so the app can say so plainly. It knows nothing of Qt.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
MODEL_DIR = ASSETS / "model"
DEMO_VIDEO = ASSETS / "demo.mp4"


def bundled_model_available() -> bool:
    return (MODEL_DIR / "config.json").exists()


def load_default_checkpoint(device: str = "cpu", dtype=None, quantize: str | None = None):
    """The bundled trained model's Checkpoint, or an untrained random stand-in (.trained is False)."""
    from engine.loading import check_device, load_checkpoint

    if bundled_model_available():
        return load_checkpoint(MODEL_DIR, device=device, dtype=dtype, quantize=quantize)
    return random_checkpoint(check_device(device))


def random_checkpoint(device: str = "cpu", seed: int = 0):
    """An untrained tiny model of the architecture with a small tokenizer, as a Checkpoint."""
    import tempfile

    import torch

    from engine import protocol as P
    from engine.checkpoint import in_memory
    from engine.config import tiny
    from engine.model import Model
    from engine.tokenizer import train_tokenizer

    words = "a the red green blue yellow circle square triangle star appears leaves there are objects one two three"
    with tempfile.TemporaryDirectory() as d:
        tok = train_tokenizer([words, P.REALTIME_SYSTEM_PROMPT] * 4, 400, Path(d) / "tokenizer.json")
    torch.manual_seed(seed)
    m = Model(tiny("moss", image_token_id=tok.image_id, vocab_size=tok.vocab_size)).eval().to(device)
    return in_memory(m, tok, "random (no trained model bundled)", trained=False)


def display_name(source: str) -> str:
    """What a user knows a model as: "the bundled model" for ours, else its folder or hub id."""
    try:
        if not source or Path(source) == MODEL_DIR or Path(source).resolve() == MODEL_DIR.resolve():
            return "the bundled model"
    except (OSError, ValueError):
        pass
    return source

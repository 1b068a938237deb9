"""The options of a session, in one place: `SessionConfig` is the one type the command line (main.py),
the app's settings (app/backend.py from app/settings.py) and the benchmarks build, and `LIMITS` /
`CHOICES` are the ranges they all read; `SessionConfig.check()` applies them. engine.session turns a
checked SessionConfig into the decoder's StreamConfig. Pure Python (no torch), so the app reads the
ranges without loading the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

# name -> (lowest, highest, lowest excluded, what it is in a sentence); whole numbers where both ends are
LIMITS: dict[str, tuple[float, float, bool, str]] = {
    "fps": (0.01, 120.0, False, "the frame rate"),
    "memory_frames": (1, 65536, False, "the visual memory in frames"),
    "keep_first": (0, 65536, False, "the frames kept at the start"),
    "max_context": (256, 1 << 20, False, "the text context in tokens"),
    "max_segment_tokens": (1, 1 << 20, False, "the longest answer in tokens"),
    "replay_tokens_per_frame": (1, 1 << 20, False, "the replay's tokens per frame"),
    "temperature": (0.0, 100.0, False, "the temperature"),
    "top_k": (0, 10**7, False, "top-k"),
    "top_p": (0.0, 1.0, True, "top-p"),
    "repetition_penalty": (0.0, 100.0, True, "the repetition penalty"),
    "seed": (0, 2**63 - 1, False, "the seed"),
    "stats_every_s": (0.0, 3600.0, False, "the statistics interval"),
    "torch_threads": (1, 1024, False, "the torch threads"),
}

CHOICES: dict[str, tuple[str, ...]] = {
    # what the checkpoint's authors use (its generation_config.json; greedy without one), or forced
    "decoding": ("auto", "greedy", "sample"),
    # how a decode step runs (engine.decoder's strategies): auto = the fixed-shape CUDA-graph step on a
    # GPU, the CPU step for a float32 model on a CPU, eager modules elsewhere
    "decode_step": ("auto", "static", "cpu", "eager"),
    # the CPU step's weight copies: auto = int8 where bfloat16 is native, else float16
    "cpu_weights": ("auto", "int8", "float16"),
}


def is_whole(name: str) -> bool:
    lo, hi, _, _ = LIMITS[name]
    return isinstance(lo, int) and isinstance(hi, int)


def out_of_range(name: str, value) -> str | None:
    """None if `value` is in the range of option `name`, else the sentence saying what it must be."""
    lo, hi, lo_open, what = LIMITS[name]
    whole = is_whole(name)
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int if whole else (int, float))
        and math.isfinite(value)
        and (lo < value <= hi if lo_open else lo <= value <= hi)
    )
    if ok:
        return None
    kind = "a whole number " if whole else ""
    side = "above" if lo_open else "from"
    return f"{what} must be {kind}{side} {lo:g} up to {hi:g}, not {value}."


@dataclass(frozen=True)
class SessionConfig:
    fps: float = 1.0  # frames per second that enter the model (1 fps as in the published data)
    memory_frames: int = 64  # visual memory capacity in frames (sliding window beyond it)
    keep_first: int = 0  # frames kept at the start of the memory when it slides
    system_prompt: str | None = None  # None: the model's own (generation.json), else the reference one
    max_context: int = 4096  # text tokens before the stream is compacted
    max_segment_tokens: int = 96  # longest single answer segment
    realtime: bool = True  # pace video files by wall clock; False = replay as fast as the model goes
    # replay (realtime=False): like a live stream at this decode speed, the model may say up to this
    # many tokens after a frame before the next frame enters (lossless: nothing is dropped)
    replay_tokens_per_frame: int = 150
    # decoding: "auto" = what the checkpoint's authors use (its generation_config.json; greedy without
    # one), "greedy" or "sample"; the numbers below, when set, override the checkpoint's
    decoding: str = "auto"
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    seed: int = 0  # sampling seed: the same stream and seed say the same words
    decode_step: str = "auto"  # CHOICES["decode_step"]
    compile_decode: bool = False  # torch.compile the fixed-shape step before capturing it (GPU)
    cpu_weights: str = "auto"  # CHOICES["cpu_weights"]
    transcript_dir: Path | None = None  # write <dir>/<session_id>.jsonl as events happen
    transcript_path: Path | None = None  # or exactly this file (wins over transcript_dir)
    stats_every_s: float = 1.0
    torch_threads: int | None = None  # CPU: intra-op threads per channel (None: half the cores)

    def check(self) -> SessionConfig:
        """ValueError (one sentence) for the first option outside LIMITS / CHOICES; else self."""
        for name in LIMITS:
            value = getattr(self, name)
            if value is not None and (why := out_of_range(name, value)):
                raise ValueError(why[0].upper() + why[1:])
        for name, options in CHOICES.items():
            if getattr(self, name) not in options:
                raise ValueError(
                    f"{name.replace('_', ' ')} must be one of {', '.join(options)}, not {getattr(self, name)!r}."
                )
        return self

    @staticmethod
    def names() -> list[str]:
        return [f.name for f in fields(SessionConfig)]

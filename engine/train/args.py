"""The options of a training run (`python -m engine.train` builds them from the command line)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.train import small

STAGE_LR = {"align": 1.5e-3, "offline": 1.5e-3, "realtime": 1.0e-3}


@dataclass
class TrainArgs:
    stage: str = "realtime"
    out: str = "runs/small"
    init: str | None = None
    steps: int = 1000
    batch: int = 32  # global batch (split across ranks)
    lr: float | None = None  # default per stage (STAGE_LR)
    gate_lr_mult: float = 10.0
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    bf16: bool = False
    grad_ckpt: bool = False
    resume: bool = False
    data: str = "synthetic"
    log_every: int = 10
    save_every: int = 500
    workers: int = 2
    preset: str = "small"  # small | tiny
    dist_mode: str = "auto"  # auto (fsdp on CUDA, ddp on CPU) | fsdp | ddp
    vocab_size: int = 1024
    system_prompt: str = small.SMALL_SYSTEM_PROMPT
    cutoff_len: int = 4096
    silence_weight: float = 1.0
    device: str | None = None
    fixed_batch: bool = False  # tests: repeat the first batch (overfit check)
    progress: bool | None = None
    stop_after: int | None = None  # stop this process at this step (the schedule still ends at `steps`)
    time_limit: float | None = None  # seconds: shrink `steps` (and the schedule) to finish in time
    data_offset: int = 0  # synthetic data starts at this record index (a continued run sees new records)
    render_scales: bool = True  # synthetic frames rendered larger and downsampled (small.RENDER_SCALES)

"""First-run hardware report: GPU, VRAM and RAM, and which models fit.

This is the only module in app/ that touches torch, and only inside `probe()` (imported lazily): the
window imports this module freely. It knows nothing of Qt. The sizes are estimates a user can check:
weights at the chosen precision plus the visual memory and text cache, plus a working margin.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    name: str
    vram_gb: float  # total memory of the device


@dataclass(frozen=True)
class Hardware:
    ram_gb: float  # physical memory, 0.0 when unknown
    cpus: int
    gpus: tuple[GPU, ...]  # CUDA devices (empty without CUDA or without torch)
    mps: bool  # Apple silicon GPU through torch
    torch_version: str | None  # None when torch is not importable
    note: str = ""  # why the GPU could not be probed, if so


@dataclass(frozen=True)
class ModelNeed:
    name: str  # what a user recognises
    source: str  # hub id or "bundled"
    gpu_gb: float  # GPU memory at bfloat16 with a 256-frame visual memory (measured peak)
    ram_gb: float  # RAM to run on the CPU in float32 (0 = runs anywhere)
    gpu_int8_gb: float = 0.0  # GPU memory with the int8 text decoder (Settings > Precision: int8)


# Peaks measured by `python -m engine.bench gpu` on an H100 (README, Performance): the 11B model in
# bfloat16 peaks at 25.2 GB with 64 frames and 27.3 GB with 256 (weights 21.3 GB, the visual memory
# and text cache, vision activations, the CUDA context); with int8 weights 13.8 / 16.0 GB (vision in
# batches of 8). On a CPU, float32 weights alone are 42.6 GB.
MOSS_IDS = "fnlp-vision/moss-video-preview"
KNOWN_MODELS = (
    ModelNeed("Bundled small model (trained by this project)", "bundled", 0.0, 0.0),
    ModelNeed("MOSS-Video-Preview real-time SFT (11B)", f"{MOSS_IDS}-realtime-sft", 27.3, 48.0, 16.0),
    ModelNeed("MOSS-Video-Preview SFT (11B)", f"{MOSS_IDS}-sft", 27.3, 48.0, 16.0),
    ModelNeed(
        "Llama-3.2-11B-Vision-Instruct (stock Mllama)",
        "meta-llama/Llama-3.2-11B-Vision-Instruct",
        27.3,
        48.0,
        16.0,
    ),
)


def ram_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        pass
    if sys.platform == "win32":
        import ctypes

        class _Status(ctypes.Structure):
            _fields_ = [
                ("dwLength", ctypes.c_ulong),
                ("dwMemoryLoad", ctypes.c_ulong),
                ("ullTotalPhys", ctypes.c_ulonglong),
                ("ullAvailPhys", ctypes.c_ulonglong),
                ("ullTotalPageFile", ctypes.c_ulonglong),
                ("ullAvailPageFile", ctypes.c_ulonglong),
                ("ullTotalVirtual", ctypes.c_ulonglong),
                ("ullAvailVirtual", ctypes.c_ulonglong),
                ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
            ]

        st = _Status()
        st.dwLength = ctypes.sizeof(_Status)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(st)):  # type: ignore[attr-defined]
            return st.ullTotalPhys / 2**30
    return 0.0


def probe() -> Hardware:
    """Look at the machine. Imports torch (slow the first time): call it from a worker thread."""
    gpus: list[GPU] = []
    mps = False
    version = None
    note = ""
    try:
        import torch  # the one torch import in app/: only to ask what hardware there is

        version = torch.__version__
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                gpus.append(GPU(p.name, p.total_memory / 2**30))
        mps_backend = getattr(torch.backends, "mps", None)
        mps = bool(mps_backend is not None and mps_backend.is_available())
    except ImportError:
        note = "PyTorch is not installed, so no GPU can be used."
    except Exception as e:  # a broken driver raises assorted errors; the CPU still works
        note = f"The GPU could not be queried ({type(e).__name__}: {e})."
    return Hardware(ram_gb(), os.cpu_count() or 1, tuple(gpus), mps, version, note)


def best_device(hw: Hardware) -> str:
    if hw.gpus:
        return "cuda"
    if hw.mps:
        return "mps"
    return "cpu"


def fits(hw: Hardware, need: ModelNeed) -> tuple[bool, str]:
    """(usable, one phrase saying where it runs)."""
    if need.source == "bundled":
        return True, "runs on the CPU (always works)"
    best = max((g.vram_gb for g in hw.gpus), default=0.0)
    if best >= need.gpu_gb:
        return True, f"fits the GPU in bfloat16 ({best:.0f} GB; needs ~{need.gpu_gb:.0f} GB)"
    if need.gpu_int8_gb and best >= need.gpu_int8_gb:
        return True, (
            f"fits the GPU with int8 precision ({best:.0f} GB; needs ~{need.gpu_int8_gb:.0f} GB int8, "
            f"~{need.gpu_gb:.0f} GB bfloat16): choose Precision int8 in Settings"
        )
    if hw.ram_gb >= need.ram_gb:
        return True, f"runs on the CPU only, slowly (needs ~{need.ram_gb:.0f} GB RAM)"
    have = f"GPU {best:.0f} GB" if hw.gpus else "no GPU"
    need_gpu = need.gpu_int8_gb or need.gpu_gb
    return False, (
        f"does not fit ({have}, RAM {hw.ram_gb:.0f} GB; needs ~{need_gpu:.0f} GB of GPU memory with int8, "
        f"~{need.gpu_gb:.0f} GB in bfloat16)"
    )


def report(hw: Hardware) -> str:
    """A short plain-text report for the first-run dialog."""
    lines = []
    if hw.gpus:
        for i, g in enumerate(hw.gpus):
            lines.append(f"GPU {i}: {g.name}, {g.vram_gb:.1f} GB")
    elif hw.mps:
        lines.append("GPU: Apple silicon (MPS)")
    else:
        lines.append("GPU: none found; models run on the CPU.")
    if hw.note:
        lines.append(hw.note)
    lines.append(f"RAM: {hw.ram_gb:.1f} GB, {hw.cpus} CPU cores")
    lines.append("")
    lines.append("Models:")
    for need in KNOWN_MODELS:
        ok, why = fits(hw, need)
        lines.append(f"  {'✓' if ok else '✗'} {need.name}: {why}")
    return "\n".join(lines)

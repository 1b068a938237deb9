"""Attention kernels behind one switch: PyTorch SDPA (default, everywhere) or flash-attn (CUDA, optional).

`attend(q, k, v, causal, mask)` takes q (B, H, T, D) and k, v (B, KV, S, D) with H a multiple of KV:
grouped-query attention WITHOUT repeating KV heads (trap 3). A causal mask is bottom-right aligned
when T < S (a chunk attending a cached prefix). `mask` is boolean, True = may attend, broadcastable
to (B, H, T, S). It knows nothing of models or caches.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

_BACKEND = os.environ.get("MOSS_ATTENTION", "sdpa")  # "sdpa" or "flash"
_flash = None
_flash_name: str | None = None
_flash_error: str | None = None  # why an installed flash-attn 4 cannot run


def set_backend(name: str) -> None:
    """Choose "sdpa" or "flash" (flash falls back to SDPA where it cannot run: CPU, masks, fp32)."""
    global _BACKEND
    if name not in ("sdpa", "flash"):
        raise ValueError("attention backend must be 'sdpa' or 'flash'")
    _BACKEND = name


def choose(name: str) -> str | None:
    """set_backend for a user's switch (main.py, the benchmarks): one sentence when flash was asked for
    and cannot run here (SDPA then does the work), else None."""
    set_backend(name)
    if name == "flash" and not flash_available():
        if flash_name():
            why = "there is no CUDA GPU"
        else:
            why = (
                _flash_error
                or "flash-attn is not installed (pip install flash-attn, or flash-attn-4 on Hopper)"
            )
        return f"flash attention asked for, but {why}: using PyTorch SDPA."
    return None


def backend() -> str:
    return _BACKEND


def _load_flash():
    """flash-attn 2 (`flash_attn.flash_attn_func`) or else flash-attn 4 (`flash_attn.cute`, CuTe DSL, Hopper
    and Blackwell): (function, name, why an installed flash-attn 4 cannot be used)."""
    try:
        from flash_attn import flash_attn_func  # type: ignore

        return flash_attn_func, "flash-attn 2", None
    except Exception:
        pass
    try:
        from flash_attn.cute import flash_attn_func  # type: ignore

        return flash_attn_func, "flash-attn 4", None
    except ModuleNotFoundError as e:
        if e.name in ("flash_attn", "flash_attn.cute"):
            return None, None, None
        return None, None, f"flash-attn 4 cannot be imported ({e})"  # installed, a dependency is not
    except Exception as e:
        return None, None, f"flash-attn 4 cannot be imported ({type(e).__name__}: {e})"


def flash_available() -> bool:
    return flash_name() is not None and torch.cuda.is_available()


def flash_name() -> str | None:
    """Which flash-attn was found ("flash-attn 2" / "flash-attn 4"), None without one."""
    global _flash, _flash_name, _flash_error
    if _flash is None:
        _flash, _flash_name, _flash_error = _load_flash()
        _flash = _flash or False
    return _flash_name


def attend(q, k, v, causal: bool = False, mask: torch.Tensor | None = None) -> torch.Tensor:
    T, S = q.shape[-2], k.shape[-2]
    if (
        _BACKEND == "flash"
        and mask is None
        and q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
        and flash_available()
    ):
        # flash-attn takes (B, T, H, D), handles GQA natively and aligns causal masks bottom-right.
        o = _flash(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal)
        if isinstance(o, tuple):  # flash-attn 4 returns (out, lse)
            o = o[0]
        return o.transpose(1, 2)
    gqa = q.shape[1] != k.shape[1]
    if causal and T == S and mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if causal:  # bottom-right aligned: a chunk of T queries sees the whole cached prefix
        cm = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
        mask = cm if mask is None else (mask & cm)
    if gqa and mask is not None and q.is_cuda and T > 1:
        # Masked GQA has no fused CUDA kernel (SDPA would take the slow math path); for prefill and
        # training, repeating KV heads is the cheaper trade. Decode (T == 1) never repeats (trap 3).
        r = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(r, 1), v.repeat_interleave(r, 1)
        gqa = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)

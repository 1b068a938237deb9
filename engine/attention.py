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


def set_backend(name: str) -> None:
    """Choose "sdpa" or "flash" (flash falls back to SDPA where it cannot run: CPU, masks, fp32)."""
    global _BACKEND
    if name not in ("sdpa", "flash"):
        raise ValueError("attention backend must be 'sdpa' or 'flash'")
    _BACKEND = name


def backend() -> str:
    return _BACKEND


def flash_available() -> bool:
    global _flash
    if _flash is None:
        try:
            from flash_attn import flash_attn_func  # type: ignore

            _flash = flash_attn_func
        except Exception:
            _flash = False
    return bool(_flash) and torch.cuda.is_available()


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
        return o.transpose(1, 2)
    gqa = q.shape[1] != k.shape[1]
    if gqa and mask is not None and q.is_cuda and T > 1:
        # Masked GQA has no fused CUDA kernel (SDPA would take the slow math path); for prefill and
        # training, repeating KV heads is the cheaper trade. Decode (T == 1) never repeats (trap 3).
        r = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(r, 1), v.repeat_interleave(r, 1)
        gqa = False
    if causal and T == S and mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if causal:
        cm = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
        mask = cm if mask is None else (mask & cm)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)

"""int8 weight-only linear layers: int8 weights with one scale per output row, the activations keep
their dtype.

Decoding one token reads every weight of the text decoder once, so its speed is the bytes of the weights
over the memory bandwidth; int8 halves the bytes of bf16. That pays only if the product reads the int8
bytes directly. On CUDA, products of at most `GEMV_ROWS` rows (the decode step) go through one fused
Triton kernel (`int8_gemv`): each program streams a block of int8 weight rows once, converts them in
registers, and scales its outputs. Everywhere else (prefill chunks, perception's cross-attention K/V
projections, the CPU) the int8 weights are converted to the activations' dtype for the product.

Measured why a kernel of our own (README, issue 7): torchao's int8 weight-only tensors decoded the 11B
model at 14 tok/s against 105 for bf16 on an H100 inside our compiled CUDA-graph step (the dequantized
weights were materialised for every product).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GEMV_ROWS = 4  # products of at most this many rows take the fused kernel on CUDA

try:  # Triton ships with CUDA builds of torch; the CPU build has none (the fallback is exact)
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w (N, K) float -> (int8 (N, K), float32 scale (N,)): symmetric per row, scale = max|row| / 127.
    Converted in blocks of rows, so a large matrix (an 11B model's lm_head) needs little scratch."""
    q = torch.empty(w.shape, dtype=torch.int8, device=w.device)
    scale = torch.empty(w.shape[0], dtype=torch.float32, device=w.device)
    for i in range(0, w.shape[0], 8192):
        wf = w[i : i + 8192].detach().float()
        s = wf.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        q[i : i + 8192] = torch.round(wf / s[:, None]).clamp_(-127, 127)
        scale[i : i + 8192] = s
    return q, scale


def int8_linear(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
    """x (..., K) @ (q * scale[:, None]).T (+ bias), in x's dtype: q int8 (N, K), scale float32 (N,)."""
    rows = x.numel() // x.shape[-1]
    if x.is_cuda and rows <= GEMV_ROWS and triton is not None:  # x on CUDA: gemv_available()
        y = torch.ops.moss.int8_gemv(x.reshape(rows, x.shape[-1]), q, scale).view(*x.shape[:-1], q.shape[0])
    else:
        y = (F.linear(x, q.to(x.dtype)) * scale).to(x.dtype)
    return y if bias is None else y + bias


def gemv_available() -> bool:
    return triton is not None and torch.cuda.is_available()


if triton is not None:
    # Autotuned per (M, N, K) on first use (a few seconds per shape of an 11B model); later calls, and a
    # CUDA graph captured after the first step, reuse the chosen block sizes.
    # (BLOCK_N, BLOCK_K, warps): each thread keeps BLOCK_N * BLOCK_K / (32 * warps) = 32 partial sums
    _CONFIGS = [
        triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=nw, num_stages=ns)
        for bn, bk, nw in (
            (2, 1024, 2),
            (4, 512, 2),
            (4, 1024, 4),
            (4, 2048, 8),
            (8, 256, 2),
            (8, 512, 4),
            (8, 1024, 8),
            (16, 256, 4),
            (16, 512, 8),
            (32, 256, 8),
        )
        for ns in (2, 4)
    ]

    def _bench(fn, quantiles):
        return triton.testing.do_bench(fn, warmup=5, rep=25, quantiles=quantiles)

    @triton.jit
    def _int8_gemv_kernel(
        x_ptr,
        w_ptr,
        s_ptr,
        y_ptr,
        M,
        N,
        K,
        stride_xm,
        stride_wn,
        stride_ym,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        """y[m, n] = scale[n] * sum_k x[m, k] * w[n, k]: one row m and a block of BLOCK_N outputs per
        program. Partial sums stay elementwise in registers over the K loop (one reduction at the end,
        not one per step), so the loop is only loads and multiply-adds."""
        m = tl.program_id(1)
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            w = tl.load(
                w_ptr + rn[:, None] * stride_wn + rk[None, :], mask=(rn[:, None] < N) & (rk[None, :] < K)
            )
            x = tl.load(x_ptr + m * stride_xm + rk, mask=rk < K)
            acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
        s = tl.load(s_ptr + rn, mask=rn < N)
        y = tl.sum(acc, axis=1) * s
        tl.store(y_ptr + m * stride_ym + rn, y.to(y_ptr.dtype.element_ty), mask=rn < N)

    _int8_gemv_tuned = triton.autotune(configs=_CONFIGS, key=["M", "N", "K"], do_bench=_bench)(
        _int8_gemv_kernel
    )

    def launch_gemv(x, q, scale, y, config: dict | None = None) -> None:
        """y (M, N) = int8 GEMV of x (M, K) against q (N, K); config: fixed block sizes (no tuning)."""
        M, K = x.shape
        N = q.shape[0]
        args = (x, q, scale, y, M, N, K, x.stride(0), q.stride(0), y.stride(0))
        if config is None:
            _int8_gemv_tuned[lambda meta: (triton.cdiv(N, meta["BLOCK_N"]), M)](*args)
        else:
            _int8_gemv_kernel[(triton.cdiv(N, config["BLOCK_N"]), M)](*args, **config)

    def tuned_configs() -> dict:
        """(M, N, K, ...) -> the chosen config, for the shapes tuned so far in this process."""
        return {str(k[:3]): str(v) for k, v in _int8_gemv_tuned.cache.items()}

    # An opaque operator to torch.compile (its decode step fuses everything around it) and capturable in
    # a CUDA graph once tuned.
    @torch.library.custom_op("moss::int8_gemv", mutates_args=())
    def _int8_gemv(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        if q.stride(1) != 1:
            q = q.contiguous()
        y = torch.empty(x.shape[0], q.shape[0], device=x.device, dtype=x.dtype)
        launch_gemv(x, q, scale, y)
        return y

    @_int8_gemv.register_fake
    def _(x, q, scale):
        return x.new_empty(x.shape[0], q.shape[0])

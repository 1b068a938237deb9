"""`python -m engine.bench gpu`: our engine (MOSS 11B configuration, random weights) against
Qwen2.5-VL-7B and stock Llama-3.2-11B-Vision through transformers, on one GPU, one table.

Method (the reference's): greedy; inputs preprocessed outside the timer; one warm-up; TTFT is a
synchronized 1-token generate; TPS = (n - 1) / (n-token generate - TTFT) with n = 128.
Ours also reports: streaming TTFT (the question arrives after N frames were perceived), decode tok/s
with N frames in memory and the achieved GB/s (weights + visual memory + KV cache read per token),
perception ms per frame, decode tok/s while perception runs at 1/4/8 fps on its own CUDA stream,
and peak memory. `--scale tiny` runs the same code on tiny configs (CPU smoke test).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import sys
import threading
import time
from functools import partial
from pathlib import Path

import torch

from engine import attention
from engine import config as C
from engine.bench.baselines import N_NEW, bench_mllama, bench_qwen, timed
from engine.checkpoint import in_memory
from engine.decoding import Sampling
from engine.fast import GraphDecoder
from engine.generation import StreamDecoder
from engine.model import Model
from engine.options import SessionConfig
from engine.perception import GraphPerception, perceive
from engine.session import decoder_config

HBM_PEAK = {"H100": 3.35e12, "H200": 4.8e12}


class _Tok:
    """Token ids only (random weights need no vocabulary): enough for the stream protocol."""

    def __init__(self, image_id: int, vocab: int):
        self.span = min(1000, vocab - 20)
        self.ids = {"<|begin_of_text|>": 1, "<|eot_id|>": 2, "<|start_header_id|>": 3, "<|end_header_id|>": 4}
        self.ids.update({"<|silence|>": 5, "<|video|>": 6, "<|image|>": image_id})
        self.image_id, self.silence_id, self.eot_id = image_id, 5, 2
        self.start_header_id, self.end_header_id = 3, 4

    def id(self, name):
        return self.ids[name]

    def encode_parts(self, parts):
        out = []
        for text, markup in parts:
            for piece in text.split("<|") if markup else [text]:
                out += [10 + sum(map(ord, piece)) % self.span] * max(1, len(piece) // 4)
        return out

    def encode(self, text):
        return self.encode_parts([(text, False)])

    def encode_markup(self, text):
        return self.encode_parts([(text, True)])

    def decode(self, ids):
        return " ".join(str(i) for i in ids)


_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress on stderr, unbuffered (a run cut by a time limit still says how far it got)."""
    print(f"[bench +{time.perf_counter() - _T0:.0f}s] {msg}", file=sys.stderr, flush=True)


def make_ours(scale: str, dev, dtype):
    cfg = C.moss_11b() if scale == "full" else C.tiny("moss")
    torch.manual_seed(0)
    with torch.device(dev):
        prev = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            m = Model(cfg).eval()
        finally:
            torch.set_default_dtype(prev)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "gate" in n:
                p.fill_(0.5)  # open the gates so cross-attention is really computed
    m.inv_freq = m.inv_freq.float()
    if _INT8:
        from engine.loading import quantize_int8

        quantize_int8(m, dev)
    return m


def _nbytes(t) -> int:
    return t.numel() * t.element_size()


def bench_ours(scale, frames_list, dev, dtype, peak_bw, out):
    m = make_ours(scale, dev, dtype)
    log("ours: model built")
    cfg = m.cfg
    S = cfg.vision.image_size
    tok = _Tok(cfg.video.image_token_id, cfg.text.vocab_size)
    question = "What is happening in the video right now and what changed?"
    # bytes read per decoded token: the decoder layers, final norm and lm_head (one embedding row only)
    skip = ("vision_model", "multi_modal_projector", "language_model.embed_tokens")
    # (an int8 model: its int8 rows and scales are buffers of the projections). A generator, not a
    # list: a list kept the int8 q/k/v and gate/up matrices alive after fuse_projections replaced them
    # by one fused matrix each (the first int8 run's peak memory was 5.6 GB too high).
    tensors = itertools.chain(m.named_parameters(), m.named_buffers())
    weights = sum(_nbytes(p) for n, p in tensors if not n.startswith(skip) and "inv_freq" not in n)
    res = {"model": "ours (MOSS 11B config)" if scale == "full" else "ours (tiny)"}
    if dev.type == "cuda":
        res["model_GB"] = torch.cuda.memory_allocated() / 1e9  # the weights as loaded, before any run
    if _INT8:
        res["model"] += ", int8 weight-only"
        if dev.type == "cuda":
            res["int8_gemv"] = _int8_gemv_table(cfg, dev, dtype)
    if _COMPILE:
        res["model"] += ", compiled decode step"
    # perception: one frame at a time (live) and in batches (offline)
    px1 = torch.randn(1, 3, S, S, device=dev, dtype=dtype)
    n = 20
    with torch.inference_mode():
        for _ in range(3):
            m.project_memory(m.encode_frames(px1))
        t, _ = timed(lambda: [m.project_memory(m.encode_frames(px1)) for _ in range(n)], dev)
    res["perception_eager_ms_per_frame"] = 1000 * t / n
    res["perception_ms_per_frame"] = _live_perception_ms(m, px1, dev, dtype)
    log(f"ours: perception {res['perception_ms_per_frame']:.2f} ms/frame live")
    if _FP8_VISION:
        _fp8_side_by_side(m, res, frames_list, dev, dtype, out)
    for F in frames_list:
        res[F] = _ours_frames(m, tok, F, px1, dev, dtype, peak_bw, weights, question)
        log(f"ours: {F} frames {res[F]}")
        out(res)
        gc.collect()
    m = None
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return res


def _int8_gemv_table(cfg, dev, dtype) -> list[dict]:
    """Per decode-step product of the model's shapes: the fused int8 kernel against the bf16 product
    (cuBLAS), one row, 50 products replayed as one CUDA graph, GB/s of the weights each reads."""
    from engine import quant

    t = cfg.text
    kv = t.num_kv_heads * t.head_dim
    shapes = {
        "q/k/v (fused)": (t.num_heads * t.head_dim + 2 * kv, t.hidden_size),
        "o / cross q, o": (t.hidden_size, t.num_heads * t.head_dim),
        "gate/up (fused)": (2 * t.intermediate_size, t.hidden_size),
        "down": (t.hidden_size, t.intermediate_size),
        "lm_head": (t.vocab_size, t.hidden_size),
    }
    rows = []
    for name, (n, k) in shapes.items():
        w = torch.randn(n, k, device=dev, dtype=dtype)
        q, sc = quant.quantize_rows(w)
        x = torch.randn(1, k, device=dev, dtype=dtype)
        r = {"product": name, "N": n, "K": k}
        for label, fn, nbytes in (
            ("int8", partial(torch.ops.moss.int8_gemv, x, q, sc), n * k),
            ("bf16", partial(torch.nn.functional.linear, x, w), 2 * n * k),
        ):
            fn()  # tunes the int8 kernel for this shape
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                for _ in range(50):
                    fn()
            g.replay()
            sec, _ = timed(lambda g=g: [g.replay() for _ in range(4)], dev)
            us = sec / 200 * 1e6
            r[f"{label}_us"] = round(us, 2)
            r[f"{label}_GB_s"] = round(nbytes / us / 1e3, 1)
        r["int8_config"] = quant.tuned_configs().get(str((1, n, k)), "")
        log(f"int8 GEMV {name} {n}x{k}: {r['int8_us']} us ({r['int8_GB_s']} GB/s) vs bf16 {r['bf16_us']} us")
        rows.append(r)
    torch.cuda.empty_cache()
    return rows


def _live_perception_ms(m, px1, dev, dtype, n=20) -> float:
    """The runtime's live path: GraphPerception (one CUDA graph per frame) on a side stream."""
    side = torch.cuda.Stream() if dev.type == "cuda" else None
    with torch.cuda.stream(side) if side else contextlib.nullcontext():
        gp = GraphPerception(m, dev, dtype)
        for _ in range(3):
            gp(px1)
        t, _ = timed(lambda: [gp(px1) for _ in range(n)], dev)
    return 1000 * t / n


def _fp8_side_by_side(m, res, frames_list, dev, dtype, out) -> None:
    """--fp8-vision: the bf16 tower's batched vision time at each frame count is kept under
    "bf16_offline_vision_s_F", then the model gets its FP8 tower copy (quantize_fp8_vision), which the
    batched numbers after that use (live perception keeps the bf16 tower). Also the cosine similarity
    of FP8 to bf16 memory K/V on 8 frames."""
    from engine.loading import quantize_fp8_vision

    S = m.cfg.vision.image_size
    g = torch.Generator(device=dev).manual_seed(1)
    with torch.inference_mode():
        px8 = torch.randn(8, 3, S, S, device=dev, dtype=dtype, generator=g)
        ref = perceive(m, px8)
        for F in frames_list:
            px = torch.randn(F, 3, S, S, device=dev, dtype=dtype)
            perceive(m, px, batch=_VISION_BATCH, compile=_COMPILE)
            res[f"bf16_offline_vision_s_{F}"], _ = timed(
                lambda px=px: perceive(m, px, batch=_VISION_BATCH, compile=_COMPILE), dev
            )
            log(f"ours: bf16 vision {F} frames {res[f'bf16_offline_vision_s_{F}']:.3f} s")
    out(res)
    quantize_fp8_vision(m)
    with torch.inference_mode():
        new = perceive(m, px8)
    cos = torch.nn.functional.cosine_similarity
    res["fp8_vs_bf16_cosine_k"] = float(cos(new[0].flatten().float(), ref[0].flatten().float(), dim=0))
    res["fp8_vs_bf16_cosine_v"] = float(cos(new[1].flatten().float(), ref[1].flatten().float(), dim=0))
    log(
        f"ours: FP8 vs bf16 memory cosine k {res['fp8_vs_bf16_cosine_k']:.4f} v {res['fp8_vs_bf16_cosine_v']:.4f}"
    )
    res["model"] += ", FP8 vision (batched)"


def _ours_frames(m, tok, F, px1, dev, dtype, peak_bw, weights, question):
    S = m.cfg.vision.image_size
    r = {}
    px = torch.randn(F, 3, S, S, device=dev, dtype=dtype)
    options = SessionConfig(
        system_prompt="You are a helpful assistant that watches the video.",
        memory_frames=F,
        max_context=max(1024, 4 * F + 256),
        max_segment_tokens=10**6,
        compile_decode=_COMPILE,
        # the fixed-shape step (a CUDA graph) on a GPU; the tiny run on a CPU times the eager modules
        decode_step="static" if dev.type == "cuda" else "eager",
    )
    dec = StreamDecoder(m, tok, decoder_config(in_memory(m, tok), options, Sampling()))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def offline():
        dec.reset()
        with torch.inference_mode():
            k, v = perceive(m, px, batch=_VISION_BATCH, compile=_COMPILE)  # batched vision encoding
            for i in range(F):
                dec.add_frame(k[i], v[i])
            dec.ask(question)
            dec.flush()
            return int(dec.logits.argmax())  # the first token

    def peak(phase: str) -> None:  # where the peak memory is reached, phase after phase
        if dev.type == "cuda":
            r[f"peak_GB_after_{phase}"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)

    offline()  # warm-up
    peak("offline")
    r["offline_ttft_s"], _ = timed(offline, dev)
    log(f"ours: {F} frames offline TTFT {r['offline_ttft_s']:.3f} s")
    # where the offline TTFT goes: vision (batched), committing the frames, the text prefill
    with torch.inference_mode():
        r["offline_vision_s"], (k, v) = timed(
            lambda: perceive(m, px, batch=_VISION_BATCH, compile=_COMPILE), dev
        )

        def commit():
            dec.reset()
            for i in range(F):
                dec.add_frame(k[i], v[i])
            dec.ask(question)
            dec.commit_frames()  # what flush does first

        r["offline_commit_s"], _ = timed(commit, dev)
        r["offline_prefill_s"], _ = timed(dec.flush, dev)
        del k, v
    # streaming: frames were perceived and committed as they came; then the question arrives
    dec.reset()
    k, v = perceive(m, px, batch=_VISION_BATCH, compile=_COMPILE)
    silence = tok.silence_id
    for i in range(F):
        dec.append([silence])
        dec.add_frame(k[i], v[i])
        if i % 16 == 15:
            dec.flush()
    dec.flush()
    base_ids, base_len = list(dec.ids), len(dec.ids)

    def streaming():
        dec.ids, dec.cache.length = list(base_ids), base_len
        dec.ask(question)
        dec.flush()
        return int(dec.logits.argmax())

    peak("streaming_prefill")
    streaming()
    r["streaming_ttft_s"], _ = timed(streaming, dev)
    log(f"ours: {F} frames streaming TTFT {r['streaming_ttft_s']:.3f} s")
    # decode: n tokens with N frames in memory (the fixed-shape step under a CUDA graph on GPU)
    g = dec.graph or GraphDecoder(m, dec.cache, dec.memory, use_graph=False)
    start = len(dec.ids)

    def decode(n):
        # as the runtime does: each token reaches the host (to stream it and check for silence)
        t = int(dec.logits.argmax())
        for j in range(n):
            t = int(g(t, start + j).argmax())
        return t

    decode(4)
    peak("decode_capture")
    t_n, _ = timed(lambda: decode(N_NEW), dev)
    tps = N_NEW / t_n
    r["decode_tok_s"] = tps
    mem_read = dec.memory.k.numel() * 2 * dec.memory.k.element_size()  # full-capacity read
    kv_read = dec.cache.k.numel() * 2 * dec.cache.k.element_size()
    per_tok = weights + mem_read + kv_read
    r["achieved_GB_s"] = per_tok * tps / 1e9
    if peak_bw:
        r["hbm_fraction"] = per_tok * tps / peak_bw
    if _PROFILE and dev.type == "cuda":
        _profile_kernels(f"{F} frames: offline TTFT", offline)
        eager = GraphDecoder(m, dec.cache, dec.memory, use_graph=False)
        _profile_kernels(f"{F} frames: 8 eager decode steps", lambda: [eager(1, start + j) for j in range(8)])
    # decode while perception runs concurrently on its own stream
    for fps in (1, 4, 8):
        stop = threading.Event()

        def perceive_loop(fps=fps, stop=stop):
            stream = torch.cuda.Stream() if dev.type == "cuda" else None
            with torch.cuda.stream(stream) if stream else contextlib.nullcontext():
                gp = GraphPerception(m, dev, dtype)
            nxt = time.perf_counter()
            while not stop.is_set():
                nxt += 1.0 / fps
                with (
                    torch.inference_mode(),
                    torch.cuda.stream(stream) if stream else contextlib.nullcontext(),
                ):
                    kk, vv = gp(px1)
                    dec.memory.stage(0, kk[0], vv[0])
                time.sleep(max(0.0, nxt - time.perf_counter()))

        th = threading.Thread(target=perceive_loop)
        th.start()
        n = max(N_NEW, int(2.0 * tps))  # at least ~2 s of decoding so several frames land
        n = min(n, dec.cache.max_len - start - 1)
        t_p, _ = timed(lambda n=n: decode(n), dev)
        stop.set()
        th.join()
        r[f"decode_tok_s_perceiving_{fps}fps"] = n / t_p
    if dev.type == "cuda":
        r["peak_mem_GB"] = torch.cuda.max_memory_allocated() / 1e9
    return r


_PROFILE = False
_COMPILE = False
_INT8 = False
_FP8_VISION = False
_VISION_BATCH = 32  # frames per batch of the offline (all frames at once) vision encoding


def _profile_kernels(title: str, fn) -> None:
    """Print the GPU kernels that take the time in fn (torch.profiler), largest first."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    print(f"\n--- {title}")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))


def plot(results: dict, png: str | Path) -> None:
    """Offline TTFT and decode tok/s per model and frame count (log scale), from run()'s JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = results["frames"]
    runs = results["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / max(1, len(runs))
    for ax, key, title in (
        (axes[0], "offline_ttft_s", "offline TTFT, s (lower is better)"),
        (axes[1], "decode_tok_s", "decode tokens/s (higher is better)"),
    ):
        for j, r in enumerate(runs):
            vals = [r.get(str(F), r.get(F, {})).get(key) or 0 for F in frames]
            xs = [i + j * width for i in range(len(frames))]
            bars = ax.bar(xs, vals, width, label=r["model"])
            ax.bar_label(bars, [f"{v:.3g}" if v else "" for v in vals], fontsize=7)
        ax.set_xticks(
            [i + width * (len(runs) - 1) / 2 for i in range(len(frames))], [f"{F} frames" for F in frames]
        )
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"python -m engine.bench gpu ({results['device']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def run(args) -> dict:
    if getattr(args, "plot_json", None):
        results = json.loads(Path(args.plot_json).read_text())
        plot(results, args.png or Path(args.plot_json).with_suffix(".png"))
        return results
    global _PROFILE, _COMPILE, _VISION_BATCH, _INT8, _FP8_VISION
    if msg := attention.choose(getattr(args, "attention", "sdpa")):
        raise SystemExit(msg.replace("using PyTorch SDPA.", "no flash run here."))
    _INT8 = bool(getattr(args, "int8", False))
    _FP8_VISION = bool(getattr(args, "fp8_vision", False))
    _VISION_BATCH = int(getattr(args, "vision_batch", _VISION_BATCH))
    _PROFILE = bool(getattr(args, "profile", False))
    _COMPILE = bool(getattr(args, "compile", False))
    dev = torch.device(args.device if args.device else ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    frames_list = [int(f) for f in args.frames.split(",")]
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    peak = next((v for k, v in HBM_PEAK.items() if k in name), None)
    results = {"device": name, "frames": frames_list, "runs": [], "attention": attention.backend()}
    if attention.backend() == "flash":
        results["attention"] = attention.flash_name()
    path = Path(args.json) if args.json else None

    def out(_r):
        if path:
            path.write_text(json.dumps(results, indent=2, default=str))

    for which in args.only.split(","):
        t0 = time.perf_counter()
        log(f"{which}: start")
        if which == "ours":
            r = bench_ours(args.scale, frames_list, dev, dtype, peak, out)
        elif which == "qwen":
            r = bench_qwen(args.scale, frames_list, dev, dtype, out)
        elif which == "mllama":
            r = bench_mllama(args.scale, frames_list, dev, dtype, out)
        else:
            raise SystemExit(f"unknown model {which!r} (ours, qwen, mllama)")
        r["bench_wall_s"] = time.perf_counter() - t0
        results["runs"].append(r)
        out(results)
        print(json.dumps(r, default=str), flush=True)
    print_table(results)
    return results


def print_table(results) -> None:
    cols = [
        ("streaming_ttft_s", "stream TTFT s"),
        ("offline_ttft_s", "offline TTFT s"),
        ("decode_tok_s", "tok/s"),
        ("achieved_GB_s", "GB/s"),
        ("hbm_fraction", "of HBM"),
        ("decode_tok_s_perceiving_4fps", "tok/s @4fps"),
        ("peak_mem_GB", "peak GB"),
    ]
    print(f"\ndevice: {results['device']}; attention: {results.get('attention', 'sdpa')}")
    print("| model | frames | " + " | ".join(c[1] for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for r in results["runs"]:
        for F in results["frames"]:
            row = r.get(F, {})
            cells = []
            for k, _ in cols:
                v = row.get(k)
                cells.append(
                    ""
                    if v is None
                    else (
                        f"{v:.3f}"
                        if isinstance(v, float) and v < 10
                        else f"{v:.1f}"
                        if isinstance(v, float)
                        else str(v)
                    )
                )
            print(f"| {r['model']} | {F} | " + " | ".join(cells) + " |")
        if "perception_ms_per_frame" in r:
            print(
                f"  {r['model']}: perception {r['perception_ms_per_frame']:.2f} ms/frame live (CUDA graph; "
                f"eager {r.get('perception_eager_ms_per_frame', float('nan')):.2f})"
            )
        if "fp8_vs_bf16_cosine_k" in r:
            vision = ", ".join(
                f"{F} frames {r[F]['offline_vision_s']:.3f} s vs {r[f'bf16_offline_vision_s_{F}']:.3f} s"
                for F in results["frames"]
                if F in r and f"bf16_offline_vision_s_{F}" in r
            )
            print(
                f"  FP8 vs bf16 batched vision in this run: {vision}; "
                f"memory cosine k {r['fp8_vs_bf16_cosine_k']:.4f}, v {r['fp8_vs_bf16_cosine_v']:.4f}"
            )


def add_args(p) -> None:
    p.add_argument("--plot-json", help="no run: plot the results of an earlier run (its --json file)")
    p.add_argument("--vision-batch", type=int, default=_VISION_BATCH, help="frames per offline vision batch")
    p.add_argument(
        "--int8", action="store_true", help="our model with int8 weight-only decoder (engine.quant)"
    )
    p.add_argument(
        "--fp8-vision",
        action="store_true",
        help="our vision tower in FP8 (torchao), its bf16 timings kept alongside in the same run",
    )
    p.add_argument(
        "--attention",
        choices=["sdpa", "flash"],
        default="sdpa",
        help="attention kernels of our model: PyTorch SDPA or flash-attn (2, or 4 on Hopper)",
    )
    p.add_argument("--png", help="where --plot-json writes the plot (default: next to the JSON)")
    p.add_argument("--scale", choices=["full", "tiny"], default="full")
    p.add_argument("--frames", default="64,256")
    p.add_argument("--only", default="ours,mllama,qwen")
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None, help="write results as JSON here (updated as runs finish)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile our decode step (before capture) and batched vision",
    )
    p.add_argument(
        "--profile", action="store_true", help="print the GPU kernels behind offline TTFT and decode"
    )

"""Soak: stream for a long time with a question every minute and watch for slow decay.

    python -m engine.bench soak --minutes 60 --fps 1 --simulated   # stream clock, as fast as the CPU
    python -m engine.bench soak --minutes 5 --wall                  # a real Session in real time

Simulated mode drives the real `StreamDecoder` with a simulated clock: each frame is rendered by the
procedural world (engine.data.world, looping seeds) at the model's image size, perceived, committed,
then decoded until the model falls silent or spends the per-frame token budget. Every stream minute
it samples resident memory, visual-memory frames, KV cache length, compactions, decode-step and
per-frame latency and distinct-2 of that minute's speech. Wall mode samples the same from a real
Session's Stats events. It prints a table and PASS/FAIL lines (a benchmark, not a test) and writes
soak.csv and soak.png to --out. It knows nothing of Qt.
"""

from __future__ import annotations

import csv
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.session import rss_mb

QUESTIONS = [
    "What do you see?",
    "How many shapes are there?",
    "Tell me when a red shape appears.",
    "What number is on the display?",
    "Which shape moved last?",
]


@dataclass
class Minute:
    minute: int  # stream minute that ended
    rss_mb: float  # process resident memory at the end of the minute
    frames_in_memory: int  # visible frames in the visual memory
    capacity: int  # visual memory capacity (frames)
    kv_len: int  # text tokens in the self-attention cache
    compactions: int  # total so far
    step_ms: float  # median decode-step latency in this minute
    frame_ms: float  # median wall time per stream frame (perceive + commit + decode)
    tokens: int  # tokens decoded in this minute
    distinct2: float  # distinct bigrams / bigrams of this minute's speech (nan when < 2 words)
    gpu_mb: float = 0.0  # GPU memory allocated by torch at the end of the minute (0 on the CPU)


def gpu_mb() -> float:
    import torch

    return torch.cuda.memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0


def distinct_n(texts: list[str], n: int = 2) -> float:
    grams = []
    for t in texts:
        w = t.split()
        grams += [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def _frames(size: int):
    """Endless procedural video frames (H, W, 3) uint8, one per stream second, looping seeds."""
    from engine.data.world import make_video

    seed = 0
    while True:
        v = make_video(seed)
        for i in range(v.n_frames):
            yield v.render(i, size)
        seed += 1


def soak_simulated(ckpt, minutes: float, fps: float, memory_frames: int, token_budget: int, log=print):
    import torch

    from engine import events as E
    from engine.generation import StreamDecoder
    from engine.options import SessionConfig
    from engine.perception import perceive
    from engine.preprocess import batch_pixels
    from engine.session import decoder_config

    model = ckpt.model
    now = [0.0]
    options = SessionConfig(memory_frames=memory_frames)
    dec = StreamDecoder(model, ckpt.tokenizer, decoder_config(ckpt, options), clock=lambda: now[0])
    size = model.cfg.vision.image_size
    frames = _frames(size)
    rows: list[Minute] = []
    steps: list[float] = []
    per_frame: list[float] = []
    speech: list[str] = []
    tokens = 0
    n_frames = int(minutes * 60 * fps)
    per_minute = int(60 * fps)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    for i in range(n_frames):
        now[0] = i / fps
        t0 = time.perf_counter()
        if i % per_minute == 0:
            dec.ask(QUESTIONS[(i // per_minute) % len(QUESTIONS)])
        p0 = next(model.parameters())
        px = batch_pixels([next(frames)], size, model.cfg.video.resize).to(p0.device, p0.dtype)
        kv = perceive(model, px)
        dec.add_frame(kv[0][0], kv[1][0], now[0])
        for _ in range(token_budget):
            s0 = time.perf_counter()
            evs = dec.step()
            steps.append(time.perf_counter() - s0)
            tokens += sum(isinstance(e, E.Token) for e in evs)
            speech += [e.text for e in evs if isinstance(e, E.SpeechEnd)]
            if dec.waiting:
                break
        per_frame.append(time.perf_counter() - t0)
        if (i + 1) % per_minute == 0:
            row = Minute(
                minute=(i + 1) // per_minute,
                rss_mb=rss_mb(),
                gpu_mb=gpu_mb(),
                frames_in_memory=dec.memory.visible,
                capacity=dec.memory.C,
                kv_len=dec.cache.length,
                compactions=dec.compactions,
                step_ms=1000 * statistics.median(steps) if steps else float("nan"),
                frame_ms=1000 * statistics.median(per_frame),
                tokens=tokens,
                distinct2=distinct_n(speech),
            )
            rows.append(row)
            log(_fmt(row))
            steps, per_frame, speech, tokens = [], [], [], 0
    return rows


def soak_wall(ckpt, minutes: float, fps: float, memory_frames: int, log=print):
    from engine import events as E
    from engine.options import SessionConfig
    from engine.session import Session
    from engine.sources import SyntheticSource

    size = ckpt.cfg.vision.image_size
    frames = _frames(max(size, 224))
    s = Session(ckpt, config=SessionConfig(fps=fps, memory_frames=memory_frames, realtime=True))
    s.start(SyntheticSource(lambda i: next(frames), fps=fps, realtime=True))
    rows: list[Minute] = []
    stats: list[E.Stats] = []
    speech: list[str] = []
    tokens, frame_count = 0, 0
    end = time.monotonic() + minutes * 60
    next_q, next_row = 0.0, 60.0
    try:
        while time.monotonic() < end and s.running:
            if s.clock() >= next_q:
                s.ask(QUESTIONS[int(next_q // 60) % len(QUESTIONS)])
                next_q += 60
            for ev in s.poll():
                if isinstance(ev, E.Stats):
                    stats.append(ev)
                elif isinstance(ev, E.Token):
                    tokens += 1
                elif isinstance(ev, E.SpeechEnd):
                    speech.append(ev.text)
                elif isinstance(ev, E.FrameSeen):
                    frame_count += 1
            if s.clock() >= next_row and stats:
                last = stats[-1]
                tps = statistics.median(x.tokens_per_s for x in stats)
                row = Minute(
                    minute=int(next_row // 60),
                    rss_mb=rss_mb(),
                    gpu_mb=gpu_mb(),
                    frames_in_memory=last.frames_in_memory,
                    capacity=memory_frames,
                    kv_len=s.decoder.cache.length,
                    compactions=s.decoder.compactions,
                    step_ms=1000 / tps if tps > 0 else float("nan"),
                    frame_ms=1000 / statistics.median(x.perception_fps for x in stats)
                    if any(x.perception_fps for x in stats)
                    else float("nan"),
                    tokens=tokens,
                    distinct2=distinct_n(speech),
                )
                rows.append(row)
                log(_fmt(row))
                stats, speech, tokens = [], [], 0
                next_row += 60
            time.sleep(0.05)
    finally:
        s.stop()
    return rows


HEADER = f"{'min':>4} {'rss MB':>8} {'frames':>9} {'kv len':>7} {'compact':>7} {'step ms':>8} {'frame ms':>9} {'tokens':>7} {'dist-2':>6}"


def _fmt(r: Minute) -> str:
    return (
        f"{r.minute:>4} {r.rss_mb:>8.1f} {r.frames_in_memory:>4}/{r.capacity:<4} {r.kv_len:>7} {r.compactions:>7} "
        f"{r.step_ms:>8.2f} {r.frame_ms:>9.1f} {r.tokens:>7} {r.distinct2:>6.2f}"
    )


def verdicts(rows: list[Minute]) -> list[tuple[str, bool, str]]:
    """(check, passed, numbers) for the four things a long run must not do."""
    out = []
    n = len(rows)
    # steady state: the visual memory is full, or the text context already compacts (the untrained
    # model talks so much that compaction, not the frame capacity, bounds the memory first)
    filled = next((i for i, r in enumerate(rows) if r.frames_in_memory >= r.capacity or r.compactions), n - 1)
    window = rows[max(filled, n - 30) :]
    if len(window) >= 2:
        # peaks of each half: RSS steps up and back down around compactions (the allocator keeps
        # the re-prefill buffers a while), so single samples at the window's ends would be noise
        half = len(window) // 2
        a = max(r.rss_mb for r in window[:half])
        b = max(r.rss_mb for r in window[half:])
        growth = (b - a) / a
        out.append(
            (
                "RSS flat after the memory fills",
                growth < 0.05,
                f"peak {a:.1f} -> {b:.1f} MB, halves of the last {len(window)} min ({100 * growth:+.1f}%)",
            )
        )
    if len(window) >= 2 and window[0].gpu_mb > 0:
        half = len(window) // 2
        a = max(r.gpu_mb for r in window[:half])
        b = max(r.gpu_mb for r in window[half:])
        out.append(
            (
                "GPU memory flat after the memory fills",
                b <= a * 1.05,
                f"peak {a:.1f} -> {b:.1f} MB allocated, halves of the last {len(window)} min",
            )
        )
    if n >= 12:
        ref = rows[9:20] if n >= 30 else rows[n // 3 : 2 * n // 3]
        tail = rows[-10:]
        a = statistics.median(r.step_ms for r in ref)
        b = statistics.median(r.step_ms for r in tail)
        out.append(
            ("latency not growing", b <= 1.2 * a, f"median step {a:.2f} ms (ref) vs {b:.2f} ms (last 10 min)")
        )
    worst = max(r.frames_in_memory - r.capacity for r in rows)
    out.append(
        (
            "no frame-slot leak",
            worst <= 0,
            f"most visible frames {max(r.frames_in_memory for r in rows)} of {rows[0].capacity}",
        )
    )
    d = [r.distinct2 for r in rows if r.distinct2 == r.distinct2]
    if len(d) >= 4:
        first, last = statistics.median(d[: len(d) // 2]), statistics.median(d[len(d) // 2 :])
        out.append(
            (
                "distinct-2 not collapsing",
                last >= 0.7 * first,
                f"distinct-2 {first:.2f} (first half) vs {last:.2f} (second half)",
            )
        )
    else:
        out.append(("distinct-2 not collapsing", True, "too little speech to measure"))
    return out


def write_outputs(rows: list[Minute], out: Path) -> tuple[Path, Path | None]:
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "soak.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        w.writeheader()
        w.writerows(asdict(r) for r in rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return csv_path, None
    fig, ax = plt.subplots(figsize=(8, 4))
    m = [r.minute for r in rows]
    ax.plot(m, [r.rss_mb for r in rows], "b-", label="RSS (MB)")
    ax.set_xlabel("stream minute")
    ax.set_ylabel("RSS (MB)", color="b")
    ax2 = ax.twinx()
    ax2.plot(m, [r.step_ms for r in rows], "r-", label="decode step (ms)")
    ax2.set_ylabel("median decode step (ms)", color="r")
    if any(r.gpu_mb for r in rows):
        ax.plot(m, [r.gpu_mb for r in rows], "g-", label="GPU allocated (MB)")
        ax.legend(loc="lower left")
    ax.set_title("soak: resident memory and latency")
    fig.tight_layout()
    png = out / "soak.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return csv_path, png


def add_args(p) -> None:
    p.add_argument("--minutes", type=float, default=60.0, help="stream minutes (simulated) or wall minutes")
    p.add_argument("--fps", type=float, default=1.0)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--simulated", action="store_true", help="simulated clock, real StreamDecoder (default)"
    )
    mode.add_argument("--wall", action="store_true", help="a real Session in real time")
    p.add_argument("--memory-frames", type=int, default=64)
    p.add_argument("--token-budget", type=int, default=150, help="most tokens decoded per frame (simulated)")
    p.add_argument("--out", type=Path, default=Path("runs/soak"))
    p.add_argument("--device", default="cpu")


def run(args) -> int:
    from engine.bundled import load_default_checkpoint

    ckpt = load_default_checkpoint(device=args.device)
    kind = "trained" if ckpt.trained else "untrained random"
    mode = "wall" if args.wall else "simulated"
    print(
        f"soak: {args.minutes:g} min at {args.fps:g} fps, {mode} clock, {kind} model, memory {args.memory_frames} frames"
    )
    print(HEADER)
    t0 = time.perf_counter()
    if args.wall:
        rows = soak_wall(ckpt, args.minutes, args.fps, args.memory_frames)
    else:
        rows = soak_simulated(ckpt, args.minutes, args.fps, args.memory_frames, args.token_budget)
    print(f"took {time.perf_counter() - t0:.0f} s of wall time")
    if not rows:
        print("no full minute was streamed")
        return 1
    csv_path, png = write_outputs(rows, args.out)
    ok = True
    for name, passed, numbers in verdicts(rows):
        ok &= passed
        print(f"{'PASS' if passed else 'FAIL'} {name}: {numbers}")
    print(f"wrote {csv_path}" + (f" and {png}" if png else ""))
    return 0 if ok else 1

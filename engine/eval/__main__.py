"""Streaming evaluation from the command line.

    python -m engine.eval --model DIR --suite synthetic --seeds 1000-1199 [--offline] [--offline-rt]
                          [--no-realtime] [--json out.json] [--workers N]
    python -m engine.eval --model DIR --suite ovo|streamingbench --annotations FILE --video-root DIR

Seeds 1000-1199 are the held-out evaluation seeds (never drawn for training). The checkpoint's
generation.json system prompt is used, as the runtime does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from engine.data.synth import parse_seeds


def held_out_seeds(spec: str) -> list[int] | str:
    """The seeds of `--seeds`, or the sentence refusing them: evaluation seeds must come from the
    held-out range, which the training generator can never draw."""
    from engine.train.small import HELD_OUT

    try:
        seeds = parse_seeds(spec)
    except ValueError:
        return f"--seeds {spec!r}: give seeds like 1000-1199 or 1000,1005."
    outside = [s for s in seeds if s not in HELD_OUT]
    if outside or not seeds:
        return (
            f"--seeds {spec}: evaluation seeds must lie in {HELD_OUT.start}-{HELD_OUT.stop - 1}, the range "
            f"training never draws from ({outside[0] if outside else 'none given'} does not); anything "
            "else would measure streams the model may have trained on."
        )
    return seeds


def run_wall(args, seeds, realtime) -> int:
    from engine.eval.harness import evaluate_synthetic, load_system_prompt
    from engine.loading import load_checkpoint

    ckpt = load_checkpoint(args.model)
    t0 = time.perf_counter()
    res = evaluate_synthetic(
        ckpt,
        seeds,
        load_system_prompt(args.model),
        realtime,
        args.offline,
        args.offline_rt,
        wall_speed=args.wall,
        render_scale=args.render_scale,
    )
    res.model = str(args.model)
    print(f"# {args.model}: synthetic suite, real runtime at {args.wall:g}x real time, seeds {args.seeds}, ")
    print(f"wall {time.perf_counter() - t0:.1f} s\n")
    print(res.markdown())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({**res.to_dict(), "seeds": seeds, "wall_speed": args.wall}, f, indent=2)
    return 0


def run_synthetic(args) -> int:
    from engine.eval.harness import Results, eval_worker

    seeds = held_out_seeds(args.seeds)
    if isinstance(seeds, str):
        print(seeds, file=sys.stderr)
        return 2
    realtime = not args.no_realtime
    if args.wall:
        return run_wall(args, seeds, realtime)
    workers = max(1, args.workers)
    threads = max(1, (os.cpu_count() or 1) // workers)
    t0 = time.perf_counter()
    jobs = [
        (
            args.model,
            seeds[i::workers],
            realtime,
            args.offline,
            args.offline_rt,
            threads,
            args.tokens_per_frame,
            args.render_scale,
            args.no_repeat_ngram,
        )
        for i in range(workers)
    ]
    if workers == 1:
        parts = [eval_worker(jobs[0])]
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
            parts = list(ex.map(eval_worker, jobs))
    res = Results(model=str(args.model))
    for p in parts:
        res.merge(Results.from_dict(p))
    wall = time.perf_counter() - t0
    scale = f", frames rendered at {args.render_scale:g}x and downsampled" if args.render_scale != 1 else ""
    print(f"# {args.model}: synthetic suite, seeds {args.seeds} ({len(seeds)}){scale}, wall {wall:.1f} s\n")
    print(res.markdown())
    if args.json:
        d = res.to_dict()
        d.update(seeds=seeds, wall_s=wall, render_scale=args.render_scale)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(d, f, indent=2)
    return 0


WHERE_TO_GET = {
    "ovo": "OVO-Bench (its annotation JSON and videos are published with the benchmark's repository)",
    "streamingbench": "StreamingBench (its annotation JSON and videos are published with the benchmark)",
}


def external_data_problem(suite: str, annotations: str | None, video_root: str | None) -> str | None:
    """One sentence when a user's benchmark data is not where the arguments say, else None."""
    if not annotations or not video_root:
        return (
            f"--suite {suite} needs --annotations FILE and --video-root DIR (or MOSS_EVAL_ANNOTATIONS and "
            f"MOSS_EVAL_VIDEO_ROOT): the data of {WHERE_TO_GET[suite]}; it is not part of this project."
        )
    if not os.path.isfile(annotations):
        return f"The annotation file {annotations} does not exist (--annotations / MOSS_EVAL_ANNOTATIONS)."
    if not os.path.isdir(video_root):
        return f"The video folder {video_root} does not exist (--video-root / MOSS_EVAL_VIDEO_ROOT)."
    return None


def run_long_or_ood(args) -> int:
    """Long streams (answers by minute, with the runtime's bounded memory) or unfamiliar video."""
    import torch

    from engine.eval import harness as H
    from engine.eval.long import evaluate_long, evaluate_ood
    from engine.loading import load_checkpoint

    seeds = held_out_seeds(args.seeds)
    if isinstance(seeds, str):
        print(seeds, file=sys.stderr)
        return 2
    torch.set_num_threads(os.cpu_count() or 1)
    ckpt = load_checkpoint(args.model)
    sp = H.load_system_prompt(args.model)
    t0 = time.perf_counter()
    if args.suite == "long":
        mem = args.memory_frames or None
        r = evaluate_long(ckpt, seeds, args.duration, sp, memory_frames=mem, max_context=args.max_context)
        ok, n = r.accuracy()
        late_ok, late_n = r.accuracy(10)
        out = {
            "suite": "long",
            "duration_s": args.duration,
            "memory_frames": mem,
            # the context the streams ran with: the checkpoint's trained_context caps the option
            "max_context": min(args.max_context, ckpt.trained_context or args.max_context),
            "seeds": seeds,
            "by_minute": {m: v for m, v in sorted(r.by_minute.items())},
            "accuracy": [ok, n],
            "accuracy_from_minute_10": [late_ok, late_n],
            "compactions": r.compactions,
            "talk": r.talk.to_dict(),
        }
        print(
            f"# {args.model}: {len(seeds)} streams of {args.duration / 60:g} min, memory {mem or 'all'} frames, "
            f"{r.compactions} context compactions, wall {time.perf_counter() - t0:.0f} s"
        )
        print(f"count/display answers: {ok}/{n}; from minute 10: {late_ok}/{late_n}")
        print("by minute (asked, right):", out["by_minute"])
        print("talk:", out["talk"])
    else:
        res = evaluate_ood(ckpt, seeds, args.duration, sp, videos=args.videos)
        out = {"suite": "ood", "duration_s": args.duration, "seeds": seeds}
        out.update({k: v.to_dict() for k, v in res.items()})
        print(f"# {args.model}: unfamiliar video, {len(seeds)} x {args.duration} s per kind, nobody asking")
        for k, v in res.items():
            print(f"{k:8s} {v.to_dict()}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return 0


def run_external(args) -> int:
    import torch

    from engine.eval import benchmarks as B
    from engine.eval import harness as H
    from engine.loading import load_checkpoint

    problem = external_data_problem(args.suite, args.annotations, args.video_root)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    torch.set_num_threads(os.cpu_count() or 1)
    questions = B.READERS[args.suite](args.annotations)
    if args.limit:
        questions = questions[: args.limit]
    ckpt = load_checkpoint(args.model)
    t0 = time.perf_counter()
    res = B.run_benchmark(ckpt, questions, args.video_root, H.load_system_prompt(args.model))
    print(
        f"# {args.model}: {args.suite}, {len(questions)} questions, wall {time.perf_counter() - t0:.1f} s\n"
    )
    print(res.markdown())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(res.to_dict(), f, indent=2)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model folder (with generation.json)")
    ap.add_argument(
        "--suite", choices=["synthetic", "long", "ood", "ovo", "streamingbench"], default="synthetic"
    )
    ap.add_argument("--duration", type=int, default=300, help="long / ood: seconds of each video")
    ap.add_argument(
        "--memory-frames",
        type=int,
        default=64,
        help="long: the visual memory of the replay (the runtime's 64; 0 = keep every frame)",
    )
    ap.add_argument(
        "--max-context",
        type=int,
        default=4096,
        help="long: text tokens before the stream is compacted (the runtime's 4096)",
    )
    ap.add_argument("--seeds", default="1000-1199", help="held-out seeds, e.g. 1000-1199 or 1000,1005")
    ap.add_argument("--offline", action="store_true", help="also offline QA on offline records")
    ap.add_argument("--offline-rt", action="store_true", help="also ask the real-time questions offline")
    ap.add_argument("--no-realtime", action="store_true", help="skip the real-time replay")
    ap.add_argument("--tokens-per-frame", type=int, default=None, help="decode budget per frame")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument(
        "--wall",
        type=float,
        default=None,
        metavar="SPEED",
        help="replay through the real runtime on the wall clock at SPEED x real time (one process)",
    )
    ap.add_argument(
        "--render-scale",
        type=float,
        default=1.0,
        help="frames rendered this much larger and downsampled (as a larger video file gives them)",
    )
    ap.add_argument(
        "--no-repeat-ngram",
        type=int,
        default=None,
        metavar="N",
        help="loop guard of the decoding (0 = off); default: what a session of this checkpoint uses",
    )
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument(
        "--videos",
        nargs="*",
        default=[],
        help="ood: video files played too (real camera or screen recordings)",
    )
    ap.add_argument(
        "--annotations",
        default=os.environ.get("MOSS_EVAL_ANNOTATIONS"),
        help="external suites: the benchmark's annotation JSON (default $MOSS_EVAL_ANNOTATIONS)",
    )
    ap.add_argument(
        "--video-root",
        default=os.environ.get("MOSS_EVAL_VIDEO_ROOT"),
        help="external suites: the folder of the benchmark's videos (default $MOSS_EVAL_VIDEO_ROOT)",
    )
    ap.add_argument("--limit", type=int, default=0, help="external suites: first N questions only")
    args = ap.parse_args(argv)
    if args.suite == "synthetic":
        return run_synthetic(args)
    if args.suite in ("long", "ood"):
        return run_long_or_ood(args)
    return run_external(args)


if __name__ == "__main__":
    sys.exit(main())

"""Benchmarks are commands that print numbers (not tests): `python -m engine.bench {gpu,cpu,...}`."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.bench")
    sub = p.add_subparsers(dest="cmd", required=True)
    from engine.bench import gpu

    gpu.add_args(sub.add_parser("gpu", help="our engine vs Qwen2.5-VL-7B and stock Llama-3.2-Vision (GPU)"))
    try:
        from engine.bench import cpu

        cpu.add_args(
            sub.add_parser("cpu", help="two-channel vs decoder-only at the small model's size (CPU)")
        )
    except ImportError:
        cpu = None
    from engine.bench import soak

    soak.add_args(
        sub.add_parser(
            "soak", help="long-run stability: memory, latency, repetition (simulated or wall clock)"
        )
    )
    try:
        from engine.bench import fuzz

        fuzz.add_args(
            sub.add_parser("fuzz", help="hypothesis fuzzing of the protocol layer (needs hypothesis)")
        )
    except ImportError:
        fuzz = None
    args = p.parse_args(argv)
    if args.cmd == "gpu":
        gpu.run(args)
    elif args.cmd == "cpu":
        cpu.run(args)
    elif args.cmd == "soak":
        return soak.run(args)
    elif args.cmd == "fuzz":
        return fuzz.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

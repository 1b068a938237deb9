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
    args = p.parse_args(argv)
    if args.cmd == "gpu":
        gpu.run(args)
    elif args.cmd == "cpu":
        cpu.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Plot the long-stream evaluation: count/display answers right, by minute of the stream.

python scripts/plot_long_eval.py docs/results/eval_long_*.json --out docs/results/eval_long.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("docs/results/eval_long.png"))
    a = p.parse_args(argv)
    fig, ax = plt.subplots(figsize=(8, 4))
    for f in sorted(a.files):
        d = json.loads(f.read_text())
        minutes = sorted(int(m) for m in d["by_minute"])
        asked = [d["by_minute"][str(m)][0] for m in minutes]
        right = [d["by_minute"][str(m)][1] for m in minutes]
        rate = [100.0 * r / n if n else float("nan") for r, n in zip(right, asked, strict=True)]
        mem = d["memory_frames"] or "all"
        ctx = d.get("max_context", 4096)
        label = (
            f"{d['duration_s'] // 60} min, memory {mem} frames, context {ctx}, "
            f"{d.get('compactions', 0)} compactions ({sum(right)}/{sum(asked)})"
        )
        ax.plot(minutes, rate, marker="o", label=label)
    ax.set_xlabel("minute of the stream when the question is asked")
    ax.set_ylabel("count / display answers right (%)")
    ax.set_ylim(-5, 105)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Bundled model on long held-out streams (seeds 5000-5003)")
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""docs/results/training_loss.png from the loss logs of the shipped model's training commands
(docs/results/loss_realtime.csv, loss_offline.csv, loss_offline_sft2.csv, loss_offline_sft_rt7.csv;
`run` names the command)."""

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


def rows(name: str) -> list[dict]:
    with open(RESULTS / name) as f:
        return list(csv.DictReader(f))


def main() -> None:
    fig, (rt, off) = plt.subplots(1, 2, figsize=(14, 4.5))
    rt.set_prop_cycle(color=plt.cm.tab20.colors)
    runs: dict[str, list[dict]] = {}
    for r in rows("loss_realtime.csv"):
        runs.setdefault(r["run"], []).append(r)
    for run, rs in runs.items():
        rt.plot([int(r["step"]) for r in rs], [float(r["loss"]) for r in rs], label=run, lw=1)
    rt.set_title("real-time SFT of the shipped model (each command continues the previous checkpoint)")
    rt.set_xlabel("real-time SFT step (batch 128 streams)")
    rt.set_ylabel("loss")
    rt.legend(ncol=2, fontsize=8)
    for name, label in (
        ("loss_offline.csv", "offline SFT (first, init of the real-time run)"),
        ("loss_offline_sft2.csv", "offline SFT checkpoint compared (off2, from scratch)"),
        ("loss_offline_sft_rt7.csv", "offline SFT continued from rt7 (offft + offft2, compared with rt9)"),
    ):
        rs = rows(name)
        off.plot([int(r["step"]) for r in rs], [float(r["loss"]) for r in rs], label=label)
    off.set_title("offline SFT")
    off.set_xlabel("offline SFT step (batch 128)")
    off.legend(fontsize=8)
    for ax in (rt, off):
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "training_loss.png", dpi=100)


if __name__ == "__main__":
    main()

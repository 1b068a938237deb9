"""python -m engine.train --stage {align,offline,realtime} --out DIR [...]  (or under torchrun)."""

from __future__ import annotations

import argparse

from engine.train.loop import TrainArgs, train


def parse(argv=None) -> TrainArgs:
    d = TrainArgs()
    p = argparse.ArgumentParser(prog="python -m engine.train", description=__doc__)
    p.add_argument("--stage", choices=["align", "offline", "realtime"], required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--init", default=None, help="checkpoint folder of the previous stage")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch, help="global batch (records)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--gate-lr-mult", type=float, default=d.gate_lr_mult)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--grad-ckpt", action="store_true")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--data", default="synthetic", help="synthetic or a record file (JSON / JSONL)")
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--preset", choices=["small", "tiny"], default=d.preset)
    p.add_argument("--dist", dest="dist_mode", choices=["auto", "fsdp", "ddp"], default=d.dist_mode)
    p.add_argument("--vocab-size", type=int, default=d.vocab_size)
    p.add_argument("--system-prompt", default=d.system_prompt)
    p.add_argument("--silence-weight", type=float, default=d.silence_weight)
    p.add_argument("--device", default=None)
    p.add_argument("--time-limit", type=float, default=None, help="seconds; fit steps and schedule into it")
    p.add_argument(
        "--data-offset", type=int, default=d.data_offset,
        help="first synthetic record index per rank (continuing a run: its steps x batch sees new records)",
    )  # fmt: skip
    p.add_argument(
        "--native-frames", dest="render_scales", action="store_false",
        help="synthetic frames rendered at the model's size only (no larger render + downsampling)",
    )  # fmt: skip
    a = p.parse_args(argv)
    return TrainArgs(**vars(a))


def main(argv=None) -> None:
    train(parse(argv))


if __name__ == "__main__":
    main()

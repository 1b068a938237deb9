"""`python -m engine.eval.novelty --model DIR`: fit a checkpoint's WorldCheck (engine.novelty) on
held-out world streams, write it beside the weights, and print how it separates the world from
unfamiliar video. `--report-only` measures the folder's check without writing."""

from __future__ import annotations

import argparse

import torch

from engine.novelty import FILE, WorldCheck, fit

FIT_SEEDS = range(9000, 9120)  # held out of training; the evaluation's seeds are 1000-1199
CHECK_SEEDS = range(9120, 9200)  # sets the threshold


def _world_features(ckpt, seeds, render_scale: float) -> torch.Tensor:
    from engine.eval.harness import frames_of, synthetic_records
    from engine.perception import perceive_images
    from engine.train.small import HELD_OUT

    assert all(s in HELD_OUT for s in seeds), "world-check streams must be held out of training"
    sp = ckpt.system_prompt or ""
    frames = [
        frames_of(rec, ckpt.cfg.vision.image_size, render_scale)
        for rec in synthetic_records(seeds, "realtime", sp)
    ]
    return torch.cat([perceive_images(ckpt.model, f, features=True)[2] for f in frames])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.eval.novelty", description=__doc__.split("\n")[0])
    p.add_argument(
        "--model", default="assets/model", help="checkpoint folder to fit and write the check into"
    )
    p.add_argument("--report-only", action="store_true", help="measure the folder's check, write nothing")
    args = p.parse_args(argv)
    from engine.eval.long import OOD_KINDS, ood_frames
    from engine.loading import load_checkpoint
    from engine.perception import perceive_images

    ckpt = load_checkpoint(args.model)
    if args.report_only:
        wc = WorldCheck.load(args.model)
        if wc is None:
            print(f"{args.model} has no {FILE}")
            return 1
    else:
        half = len(FIT_SEEDS) // 2
        fit_f = torch.cat(
            [
                _world_features(ckpt, FIT_SEEDS[:half], 1.0),  # frames at the model's size
                _world_features(ckpt, FIT_SEEDS[half:], 5.0),  # frames of a larger video, downsampled
            ]
        )
        half = len(CHECK_SEEDS) // 2
        check_f = torch.cat(
            [_world_features(ckpt, CHECK_SEEDS[:half], 1.0), _world_features(ckpt, CHECK_SEEDS[half:], 3.0)]
        )
        wc = fit(fit_f, check_f)
        print(f"fitted on {len(fit_f)} frames, threshold {wc.threshold:.1f}; wrote {wc.save(args.model)}")

    def outside(features) -> str:
        flags = wc.familiar(features)
        return f"{1 - sum(flags) / len(flags):.2%}"

    print("frames judged outside the world (held-out world streams, seeds 1000-1039; unfamiliar video):")
    for scale in (1.0, 2.0, 5.0):
        print(
            f"  world, rendered at {scale:g}x the model's size: {outside(_world_features(ckpt, range(1000, 1040), scale))}"
        )
    for kind in OOD_KINDS:
        frames = [ood_frames(kind, s, 60) for s in (5000, 5001)]
        print(
            f"  {kind}: {outside(torch.cat([perceive_images(ckpt.model, f, features=True)[2] for f in frames]))}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

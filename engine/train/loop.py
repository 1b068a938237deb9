"""The training loop: one process, or several through torchrun (FSDP2 or DDP), the same code.

Owns: building the model and tokenizer of a run, the data pipeline (synthetic records rendered on
the fly in DataLoader workers, or a record file), the optimiser (AdamW, warmup + cosine, a larger lr
on the tanh gates), the step (bf16 autocast on CUDA, optional activation checkpointing, grad clip),
the loss log (loss.csv) and plot, checkpoints (HF folders through save_model) and exact resume
(weights + optimiser + step; the data position is the step because the sample index drives the data).

Layout of an output folder:
    OUT/config.json, model*.safetensors, tokenizer.json, generation.json   final model (load_model(OUT))
    OUT/last/...same + trainer_state.json + optimizer-*.safetensors                                     the latest checkpoint (resume)
    OUT/loss.csv, OUT/loss.png (if matplotlib), OUT/summary.json
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from engine.config import ModelConfig, tiny
from engine.data.loader import DataConfig, RecordDataset, collate, preprocess
from engine.model import Model
from engine.preprocess import CLIP_MEAN, CLIP_STD
from engine.tokenizer import Tokenizer, train_tokenizer
from engine.train import small
from engine.train.args import STAGE_LR, TrainArgs  # noqa: F401  (part of this module's API)
from engine.train.dist import (
    _init_weights,
    full_model_state,
    full_optim_state,
    load_optim_state,
    read_trainer_state,
    save_checkpoint,
    setup_dist,
    wrap,
)

# ---- data ---------------------------------------------------------------------------------------


class SyntheticDataset(torch.utils.data.Dataset):
    """Index i -> the i-th training record of this rank (seed small.seed_for(i, rank, world)), with
    frames rendered at `size`. Deterministic in (index, rank, world, seed): resuming at a step
    restarts the data exactly there."""

    def __init__(
        self,
        stage,
        tokenizer,
        data_cfg,
        size,
        rank=0,
        world=1,
        seed=0,
        system_prompt=None,
        offset=0,
        render_scales=True,
    ):
        self.stage, self.tok, self.cfg, self.size = stage, tokenizer, data_cfg, size
        self.rank, self.world, self.seed, self.offset = rank, world, seed, offset
        self.render_scales = render_scales
        self.system_prompt = system_prompt or small.SMALL_SYSTEM_PROMPT

    def __len__(self) -> int:
        return 1 << 40

    def __getitem__(self, i: int):
        seed = small.seed_for(i + self.offset, self.rank, self.world)
        rec = small.synthetic_record(seed, self.stage, self.system_prompt)
        rng = np.random.default_rng([self.seed, seed])
        s = preprocess(rec, tokenizer=self.tok, cfg=self.cfg, rng=rng, video_seconds=small.video_seconds(rec))
        scale = float(rng.choice(small.RENDER_SCALES)) if self.render_scales else 1.0
        frames = small.record_frames(rec, len(s.frame_refs), self.size, scale)
        return replace(s, frames=torch.from_numpy(np.ascontiguousarray(frames)))


class _Cycle(torch.utils.data.Dataset):
    """A finite dataset seen as an endless stream: index i -> epoch-shuffled item (rank-strided)."""

    def __init__(self, ds, rank, world, seed):
        self.ds, self.rank, self.world, self.seed = ds, rank, world, seed

    def __len__(self):
        return 1 << 40

    def __getitem__(self, i):
        g = i * self.world + self.rank
        n = len(self.ds)
        epoch, k = divmod(g, n)
        perm = np.random.default_rng([self.seed, epoch]).permutation(n)
        self.ds.set_epoch(epoch)
        s = self.ds[int(perm[k])]
        return replace(s, frames=torch.as_tensor(s.frames))


def make_loader(args: TrainArgs, tok: Tokenizer, size: int, start: int, per_rank: int, rank: int, world: int):
    cutoff = 8192 if args.stage == "offline" else args.cutoff_len
    dcfg = DataConfig(cutoff_len=cutoff, silence_weight=args.silence_weight)
    if args.data == "synthetic":
        ds = SyntheticDataset(
            args.stage,
            tok,
            dcfg,
            size,
            rank,
            world,
            args.seed,
            args.system_prompt,
            args.data_offset,
            args.render_scales,
        )
    else:
        from engine.data.loader import VideoFrames

        if not Path(args.data).is_file():
            raise SystemExit(
                f"--data {args.data}: no such record file (a JSON / JSONL file in the MOSS format, its videos "
                "named relative to its folder; or 'synthetic')."
            )
        frames = VideoFrames(Path(args.data).parent, dcfg, size=size)
        inner = RecordDataset(
            args.data,
            partial(preprocess, tokenizer=tok, cfg=dcfg, video_seconds=frames.seconds),
            frames,
            seed=args.seed,
        )
        ds = _Cycle(inner, rank, world, args.seed)
    if args.fixed_batch:
        indices = list(range(per_rank)) * (args.steps + 1)
    else:
        indices = range(start * per_rank, (args.steps + 1) * per_rank)
    kw = {}
    if args.workers > 0:
        kw = {"num_workers": args.workers, "prefetch_factor": 4, "persistent_workers": False}
        kw["worker_init_fn"] = _quiet_worker
    return torch.utils.data.DataLoader(
        ds,
        batch_size=per_rank,
        sampler=indices,
        collate_fn=partial(collate, pad_id=tok.pad_id),
        pin_memory=torch.cuda.is_available(),
        **kw,
    )


def _quiet_worker(_i: int) -> None:
    """One thread per data worker: many workers x many OpenCV/torch threads oversubscribe the cores."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


# ---- model ----------------------------------------------------------------------------------------


def build_config(preset: str, tok: Tokenizer) -> ModelConfig:
    if preset == "small":
        return small.small_config(tok.vocab_size, tok.image_id)
    if preset == "tiny":
        return tiny(image_token_id=tok.image_id, vocab_size=tok.vocab_size)
    raise ValueError(f"unknown preset {preset!r} (small or tiny)")


def fit_steps(step: int, rate: float, seconds_left: float, requested: int) -> int:
    """The last step of a run that must end within `seconds_left` at `rate` steps/s (5% kept in
    hand), never past the `requested` steps and at least one more step."""
    return max(step + 1, min(requested, step + int(rate * max(0.0, seconds_left) * 0.95)))


def lr_at(step: int, args: TrainArgs) -> float:
    """Linear warmup to 1, then cosine to 0.1 at args.steps (a multiplier of the peak lr)."""
    if step < args.warmup:
        return (step + 1) / args.warmup
    p = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))


def make_optimizer(model: torch.nn.Module, args: TrainArgs, lr: float) -> torch.optim.Optimizer:
    gates, decay, plain = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "gate" in name:
            gates.append(p)
        elif p.ndim >= 2 and "embed" not in name:
            decay.append(p)
        else:
            plain.append(p)
    groups = [
        {"params": decay, "weight_decay": args.weight_decay, "lr_mult": 1.0},
        {"params": plain, "weight_decay": 0.0, "lr_mult": 1.0},
        {"params": gates, "weight_decay": 0.0, "lr_mult": args.gate_lr_mult},
    ]
    for g in groups:
        g["lr"] = lr * g["lr_mult"]
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=fused)


def pixels(frames: torch.Tensor, device) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (F, 3, H, W) CLIP-normalised float32 on device."""
    x = frames.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.as_tensor(CLIP_MEAN, device=device)[None, :, None, None]
    std = torch.as_tensor(CLIP_STD, device=device)[None, :, None, None]
    return (x - mean) / std


def batch_loss(model, batch, device, bf16: bool, silence_id: int):
    """-> (weighted mean loss, stats dict of tensors: loss sum, weight, silence correct/total)."""
    ids = batch.input_ids.to(device, non_blocking=True)
    labels = batch.labels.to(device, non_blocking=True)[:, 1:]
    w = batch.loss_weights.to(device, non_blocking=True)[:, 1:]
    pv = pixels(batch.frames, device) if batch.frames is not None and len(batch.frames) else None
    counts = batch.frame_counts.tolist()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(ids, pv, frames_per_sample=counts if pv is not None else None)
    logits = logits[:, :-1].float()
    ce = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="none"
    )
    ce = ce.view_as(w)
    wsum = w.sum()
    loss = (ce * w).sum() / wsum.clamp(min=1e-6)
    with torch.no_grad():
        pred = logits.argmax(-1)
        sil = labels == silence_id
        txt = (labels != -100) & ~sil
        stats = torch.stack(
            [
                (ce * w).sum(),
                wsum,
                (pred == labels)[sil].sum().float(),
                sil.sum().float(),
                (pred == labels)[txt].sum().float(),
                txt.sum().float(),
            ]
        ).detach()
    return loss, stats


# ---- the run -----------------------------------------------------------------------------------


def train(args: TrainArgs) -> dict:
    rank, world, device = setup_dist(args)
    out = Path(args.out)
    last = out / "last"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    # tokenizer: from the resumed run, the init checkpoint, or trained here (rank 0, then shared)
    src = (
        last
        if args.resume and (last / "trainer_state.json").exists()
        else (Path(args.init) if args.init else None)
    )
    if src is not None:
        tok = Tokenizer.from_folder(src)
        gen = src / "generation.json"
        if gen.exists():
            args.system_prompt = json.loads(gen.read_text())["system_prompt"]
    else:
        tok_path = out / "tokenizer.json"
        if rank == 0:
            train_tokenizer(small.tokenizer_corpus(300, args.system_prompt), args.vocab_size, tok_path)
        if world > 1:
            dist.barrier()
        tok = Tokenizer.from_file(tok_path)

    cfg = build_config(args.preset, tok) if src is None else ModelConfig.from_file(src / "config.json")
    model = Model(cfg)
    if src is not None:
        model.load_state_dict(_init_weights(src), strict=False)
    model.gradient_checkpointing = args.grad_ckpt
    model.to(device)
    model.train()
    n_params = model.num_parameters()
    model, mode = wrap(model, args, world, device)

    peak = args.lr if args.lr is not None else STAGE_LR[args.stage]
    opt = make_optimizer(model, args, peak)
    step = 0
    if args.resume and (last / "trainer_state.json").exists():
        ts = read_trainer_state(last)
        load_optim_state(model, opt, ts["optimizer"], world)
        step = int(ts["step"])
        torch.set_rng_state(ts["torch_rng"])
        if rank == 0:
            print(f"resumed from {last} at step {step}", flush=True)

    per_rank = max(1, args.batch // world)
    loader = make_loader(args, tok, cfg.vision.image_size, step, per_rank, rank, world)
    is_tty = sys.stderr.isatty() if args.progress is None else args.progress
    bar = None
    if rank == 0 and is_tty:
        from tqdm import tqdm

        bar = tqdm(total=args.steps, initial=step, desc=f"{args.stage}", dynamic_ncols=True)

    log_path = out / "loss.csv"
    fields = ["step", "loss", "lr", "tokens_per_s", "frames_per_s", "silence_acc", "text_acc", "wall_s"]
    if rank == 0 and (not log_path.exists() or not args.resume):
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(fields)

    if rank == 0:
        print(
            f"stage {args.stage}: {n_params / 1e6:.2f} M params, {mode} x{world} on {device}, "
            f"batch {per_rank}x{world}, lr {peak:g} (gates x{args.gate_lr_mult:g}), steps {step}->{args.steps}",
            flush=True,
        )

    if device.type == "cuda":
        # Every batch has new shapes (stream lengths, frame counts); cuDNN's attention builds a plan
        # per shape, which cost more than the step itself. Flash / memory-efficient kernels do not.
        torch.backends.cuda.enable_cudnn_sdp(False)
    t0 = time.perf_counter()
    t_log = t0
    tokens = frames = 0
    tot_tokens = tot_frames = 0
    acc = torch.zeros(6, device=device)
    last_loss = float("nan")
    it = iter(loader)
    start_step = step
    requested_steps = args.steps
    end = args.steps if args.stop_after is None else min(args.steps, args.stop_after)
    data_wait = 0.0
    while step < end:
        tw = time.perf_counter()
        batch = next(it)
        data_wait += time.perf_counter() - tw
        m = lr_at(step, args)
        for g in opt.param_groups:
            g["lr"] = peak * m * g["lr_mult"]
        loss, stats = batch_loss(model, batch, device, args.bf16 and device.type == "cuda", tok.silence_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if args.time_limit and step == start_step + 20:
            t20 = time.perf_counter()  # after start-up (workers, allocator, kernels warmed)
        if args.time_limit and step >= start_step + 70 and (step - start_step - 70) % 250 == 0:
            # Fit the run (and its cosine decay) into the time limit at the rate since step 20, again
            # every 250 steps: the first estimate runs on batches the data workers made in advance.
            now = time.perf_counter()
            rate = (step - start_step - 20) / max(now - t20, 1e-9)
            fit = fit_steps(step, rate, args.time_limit - (now - t0), requested_steps)
            if world > 1:  # every rank must stop at the same step (collectives)
                ft = torch.tensor([fit], device=device)
                dist.broadcast(ft, 0)
                fit = int(ft.item())
            if fit != args.steps:
                args.steps = fit
                end = fit if args.stop_after is None else min(fit, args.stop_after)
                if rank == 0 and step == start_step + 70:
                    print(
                        f"time limit {args.time_limit:g}s: {rate:.2f} steps/s -> {args.steps} steps",
                        flush=True,
                    )
        acc += stats
        n_tok = int(batch.attention_mask.sum())
        n_fr = int(batch.frame_counts.sum())
        tokens += n_tok
        frames += n_fr
        tot_tokens += n_tok
        tot_frames += n_fr
        if step % args.log_every == 0 or step == args.steps:
            if world > 1:
                dist.all_reduce(acc)
            now = time.perf_counter()
            dt = max(now - t_log, 1e-9)
            a = acc.tolist()
            last_loss = a[0] / max(a[1], 1e-9)
            row = [
                step,
                round(last_loss, 5),
                peak * m,
                round(tokens * world / dt, 1),
                round(frames * world / dt, 1),
                round(a[2] / a[3], 4) if a[3] else "",
                round(a[4] / a[5], 4) if a[5] else "",
                round(now - t0, 2),
            ]
            if rank == 0:
                with open(log_path, "a", newline="") as f:
                    csv.writer(f).writerow(row)
                if bar is None:
                    print(
                        f"step {step}/{args.steps} loss {last_loss:.4f} lr {peak * m:.2e} "
                        f"tok/s {row[3]:.0f} frames/s {row[4]:.0f} silence_acc {row[5]} text_acc {row[6]}",
                        flush=True,
                    )
            acc.zero_()
            tokens = frames = 0
            t_log = now
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}")
        if step % args.save_every == 0 or step == args.steps:
            _save(model, opt, cfg, tok, args, step, rank, world, last)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0
    # Stop the data workers now, in order (pin-memory thread first): left to interpreter exit, a run cut
    # short by --time-limit printed a pin-memory thread's EOFError traceback after "done".
    del it

    state = full_model_state(model)
    if rank == 0:
        save_checkpoint(out, cfg, state, tok, args)
    summary = {
        "stage": args.stage,
        "steps": step,
        "steps_run": step - start_step,
        "wall_s": round(wall, 2),
        "steps_per_s": round((step - start_step) / max(wall, 1e-9), 3),
        "data_wait_s": round(data_wait, 2),  # time the GPU waited for data (the rest is compute)
        "tokens_per_s": round(tot_tokens * world / max(wall, 1e-9), 1),
        "frames_per_s": round(tot_frames * world / max(wall, 1e-9), 1),
        "final_loss": last_loss,
        "params": n_params,
        "world_size": world,
        "mode": mode,
        "args": asdict(args),
    }
    if rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        plot_loss(log_path, out / "loss.png")
        print(
            f"done: {summary['steps_run']} steps in {wall:.1f} s ({summary['steps_per_s']} steps/s), "
            f"{summary['tokens_per_s']:.0f} tokens/s, {summary['frames_per_s']:.0f} frames/s, "
            f"final loss {last_loss:.4f}",
            flush=True,
        )
    print(f"rank {rank} finished, final loss {last_loss:.4f}", flush=True)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _save(model, opt, cfg, tok, args, step, rank, world, last: Path) -> None:
    state = full_model_state(model)  # collective under FSDP: every rank calls it
    ostate = full_optim_state(model, opt)
    if rank == 0:
        ts = {"step": step, "optimizer": ostate, "torch_rng": torch.get_rng_state(), "stage": args.stage}
        save_checkpoint(last, cfg, state, tok, args, ts)
    if world > 1:
        dist.barrier()


def plot_loss(csv_path: Path, png_path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no plot; the loss log is {csv_path}", flush=True)
        return
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    x = [int(r["step"]) for r in rows]
    y = [float(r["loss"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, y)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)

"""Training loop: overfit, checkpoint round trip, exact resume, torchrun (FSDP, gloo) on 2 processes."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import torch

from engine.loading import load_checkpoint, load_model
from engine.model import Model
from engine.train import small
from engine.train.loop import TrainArgs, build_config, fit_steps, read_trainer_state, save_checkpoint, train


def _losses(folder):
    with open(folder / "loss.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def _args(out, **kw):
    base = dict(
        stage="realtime",
        out=str(out),
        preset="tiny",
        batch=2,
        workers=0,
        log_every=1,
        warmup=1,
        progress=False,
    )
    base.update(kw)
    return TrainArgs(**base)


def test_eval_seeds_never_drawn():
    seeds = {small.seed_for(i, r, w) for i in range(200) for w in (1, 2, 8) for r in range(w)}
    assert not seeds & set(small.EVAL_SEEDS)
    with pytest.raises(ValueError):
        small.synthetic_record(1000, "realtime")


def test_training_frames_include_downsampled_renders():
    """Like frames of a larger video file: some training samples are rendered larger and
    area-downsampled (small.RENDER_SCALES), the rest natively; --native-frames turns it off."""
    import cv2
    import numpy as np

    from engine.data.loader import DataConfig
    from engine.tokenizer import Tokenizer
    from engine.train.loop import SyntheticDataset

    rec = small.synthetic_record(small.seed_for(3), "realtime")
    big = small.record_frames(rec, 4, 320)
    want = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA) for f in big])
    assert np.array_equal(small.record_frames(rec, 4, 64, 5.0), want)
    assert not np.array_equal(want, small.record_frames(rec, 4, 64))
    tok = Tokenizer.from_folder("assets/model")
    on = SyntheticDataset("realtime", tok, DataConfig(), 64)
    off = SyntheticDataset("realtime", tok, DataConfig(), 64, render_scales=False)
    same = [torch.equal(on[i].frames, off[i].frames) for i in range(12)]
    assert any(same) and not all(same)
    assert all(tuple(on[i].frames.shape[1:]) == (64, 64, 3) for i in range(3))


def test_overfit_one_batch(tmp_path):
    train(_args(tmp_path, steps=25, lr=3e-3, fixed_batch=True, save_every=1000))
    losses = _losses(tmp_path)
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0], losses
    assert (tmp_path / "generation.json").exists()


def test_checkpoint_reload_same_logits(tmp_path):
    from engine.tokenizer import train_tokenizer

    tok = train_tokenizer(small.tokenizer_corpus(30), 600, tmp_path / "tok.json")
    cfg = build_config("tiny", tok)
    torch.manual_seed(0)
    model = Model(cfg).eval()
    for n, p in model.named_parameters():  # open the gates so that frames matter
        if "gate" in n:
            p.data.fill_(0.5)
    save_checkpoint(tmp_path / "ck", cfg, model.state_dict(), tok, _args(tmp_path))
    ckpt = load_checkpoint(tmp_path / "ck")
    loaded = ckpt.model
    w = tok.encode(" a red circle")
    ids = torch.tensor([[tok.bos_id, *w, tok.image_id, *w, tok.image_id, *w]])
    px = torch.randn(2, 3, cfg.vision.image_size, cfg.vision.image_size)
    with torch.no_grad():
        assert torch.equal(model(ids, px, [2]), loaded(ids, px, [2]))
    assert ckpt.tokenizer.vocab_size == tok.vocab_size


def test_resume_matches_uninterrupted_run(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(_args(a, steps=6, save_every=100))
    # the same 6-step schedule, stopped right after its step-3 checkpoint, then resumed
    train(_args(b, steps=6, save_every=3, stop_after=3))
    st = read_trainer_state(b / "last")
    assert st["step"] == 3
    assert all("exp_avg" in d and "exp_avg_sq" in d for d in st["optimizer"]["state"].values())
    train(_args(b, steps=6, save_every=3, resume=True))
    assert _losses(b) == pytest.approx(_losses(a), rel=1e-4, abs=1e-5)


def test_torchrun_two_processes_fsdp(tmp_path):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "engine.train",
        "--stage", "realtime", "--out", str(tmp_path), "--steps", "3", "--batch", "4", "--preset", "tiny",
        "--workers", "0", "--log-every", "1", "--save-every", "2", "--warmup", "1", "--dist", "fsdp",
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "rank 0 finished" in out and "rank 1 finished" in out
    losses = _losses(tmp_path)
    assert len(losses) == 3 and all(map(torch.isfinite, torch.tensor(losses)))
    assert load_model(tmp_path).num_parameters() > 0
    assert read_trainer_state(tmp_path / "last")["step"] == 3  # saved at 2, then at the end


def test_time_limit_refits_when_the_data_slows_down():
    """--time-limit: the run is fitted to the time left, at the rate measured so far, again and again;
    a run whose data workers fall behind after the first estimate shrinks instead of running over."""
    first = fit_steps(70, rate=7.0, seconds_left=500, requested=30000)
    assert first == 70 + int(7.0 * 500 * 0.95)
    later = fit_steps(1000, rate=4.5, seconds_left=300, requested=30000)  # slower than first measured
    assert later == 1000 + int(4.5 * 300 * 0.95) < first
    assert fit_steps(1000, rate=50.0, seconds_left=300, requested=3000) == 3000  # never past the request
    assert fit_steps(1000, rate=4.5, seconds_left=-5, requested=3000) == 1001  # over time: stop now

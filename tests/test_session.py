"""The runtime: two channels that do not block each other, stop within a second, the protocol."""

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import events as E
from engine.bundled import random_checkpoint
from engine.data.loader import preprocess
from engine.generation import StreamConfig, StreamDecoder
from engine.session import Session, SessionConfig
from engine.sources import SyntheticSource
from tests.paths import MOSS_DEMO

ROOT = Path(__file__).resolve().parents[1]
DEMO = MOSS_DEMO


@pytest.fixture(scope="module")
def model():
    return random_checkpoint()


def frames_fn(i):
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, (i * 5) % 64] = 255
    return img


def run_for(session, seconds):
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out += session.poll()
        time.sleep(0.01)
    return out


def test_slow_generator_does_not_slow_perception(model, monkeypatch):
    orig = StreamDecoder.step

    def slow_step(self):
        time.sleep(0.15)
        return orig(self)

    monkeypatch.setattr(StreamDecoder, "step", slow_step)
    s = Session(model, config=SessionConfig(fps=5, system_prompt="watch"))
    s.start(SyntheticSource(frames_fn, fps=20, realtime=True, num_frames=200))
    run_for(s, 2.6)
    s.stop()
    log = list(s.perception_log)
    assert len(log) >= 11
    gaps = np.diff(log[1:])  # the first frame may wait for the model's prefill
    assert abs(float(np.median(gaps)) - 0.2) < 0.02, gaps
    assert abs(float(np.mean(gaps)) - 0.2) < 0.02, gaps


def test_slow_perception_does_not_stop_tokens(model, monkeypatch):
    s = Session(model, config=SessionConfig(fps=5, system_prompt="watch"))
    orig = model.model.encode_frames

    def slow_encode(px):
        time.sleep(0.6)
        return orig(px)

    monkeypatch.setattr(model.model, "encode_frames", slow_encode)
    s.start(SyntheticSource(frames_fn, fps=20, realtime=True, num_frames=200))
    s.ask("what do you see?")
    evs = run_for(s, 2.0)
    s.stop()
    toks = [e for e in evs if isinstance(e, E.Token)]
    frames = [e for e in evs if isinstance(e, E.FrameSeen)]
    assert len(frames) <= 4  # perception is slow...
    assert len(toks) > 30  # ...but the model kept talking


def test_stop_returns_within_a_second_mid_generation(model):
    s = Session(model, config=SessionConfig(fps=10, system_prompt="watch", max_segment_tokens=10_000))
    s.start(SyntheticSource(frames_fn, fps=30, realtime=True))
    s.ask("describe everything")
    evs = run_for(s, 0.8)
    assert any(isinstance(e, E.Token) for e in evs)
    t0 = time.monotonic()
    s.stop()
    assert time.monotonic() - t0 < 1.0
    assert not any(t.is_alive() for t in s._threads)
    assert not [t for t in threading.enumerate() if t.name.startswith("moss-")]
    rest = s.poll()
    assert isinstance(rest[-1], E.SessionEnd)


def test_transcript_written_as_it_goes(model, tmp_path):
    s = Session(model, config=SessionConfig(fps=5, system_prompt="watch", transcript_dir=tmp_path))
    s.start(SyntheticSource(frames_fn, fps=20, realtime=True, num_frames=100))
    s.ask("hello")
    run_for(s, 1.6)
    lines = s.transcript_path.read_text().splitlines()  # before stop: flushed within a second
    kinds = {json.loads(x)["kind"] for x in lines}
    assert {"SessionStart", "TurnStart", "FrameSeen"} <= kinds
    s.stop()
    assert json.loads(s.transcript_path.read_text().splitlines()[-1])["kind"] == "SessionEnd"


def reference_record():
    recs = json.loads((DEMO / "mllm_realtime_sft_demo.json").read_text())
    return next(r for r in recs if len(r["messages"]) >= 7)


def test_protocol_matches_reference_records(model):
    """Replay a real reference record through the decoder (decisions forced to the record's own):
    the token stream the model sees equals the training tokenisation of that record."""
    rec = reference_record()
    tok = model.tokenizer
    system = rec["messages"][0]["content"]
    sample = preprocess(rec, tokenizer=tok)
    ref = sample.input_ids.tolist()
    dec = StreamDecoder(
        model.model, tok, StreamConfig(system_prompt=system, max_context=100_000, max_segment_tokens=10**6)
    )
    hdr = tok.encode_markup("<|start_header_id|>assistant<|end_header_id|>\n\n")
    # walk the reference after the first assistant header, driving the decoder
    i = len(dec.prefix_ids)
    assert ref[:i] == dec.prefix_ids
    forced = []
    dec._sample = lambda: forced.pop(0)
    k = torch.zeros(len(model.model.xattn_layers), model.model.tokens_per_frame, 2, 16)
    users = [m["content"] for m in rec["messages"] if m["role"] == "user"][1:]
    while i < len(ref):
        t = ref[i]
        if t == tok.image_id:
            dec.add_frame(k, k.clone())
            i += 1
        elif t == tok.eot_id:
            if i == len(ref) - 1:
                break  # the record's closing <|eot_id|>
            q = users.pop(0)
            dec.ask(q)
            # skip the user turn in the reference up to the next assistant header
            while ref[i : i + len(hdr)] != hdr:
                i += 1
            i += len(hdr)
        else:
            forced.append(t)
            dec.step()
            i += 1
    dec.flush()
    # the record ends "...<|silence|><|eot_id|>": the chosen silence is appended when the next frame
    # or question arrives, so it is still a decision of the decoder here
    assert ref[-2] == tok.silence_id and dec.waiting
    assert dec.ids + dec.pending == ref[:-2]
    assert users == []


def test_the_user_is_told_when_old_frames_leave_the_memory(model):
    from engine.session import Session, SessionConfig
    from engine.sources import SyntheticSource

    s = Session(
        model, config=SessionConfig(realtime=False, memory_frames=4, max_context=512, system_prompt="Watch.")
    )
    s.start(SyntheticSource(fps=1, realtime=False, num_frames=40))
    evs = list(s.events(timeout=120))
    notes = [e for e in evs if e.kind == "Compacted"]
    frames = [e for e in notes if e.what == "frames"]
    assert len(frames) == 1 and "last 4 frames" in frames[0].message  # said once, when it starts sliding
    first_slide = next(i for i, e in enumerate(evs) if e.kind == "Compacted")
    assert 4 <= sum(e.kind == "FrameSeen" for e in evs[:first_slide]) <= 5  # when the 5th frame enters
    context = [e for e in notes if e.what == "context"]
    assert len(context) == 1 and "compacted" in context[0].message  # said once, however often it happens
    assert s.decoder.compactions > 1

"""Streaming evaluation: replay a record's video through the real decoding path and score what the
model did against the record's ground truth (`meta`, see engine.data.synth's module docstring).

Replay (`replay`) uses a SIMULATED clock: deterministic and as fast as the model decodes. For each
frame f in order: perceive it, `add_frame`, and when a question is due after frame f (meta ask_frame)
let the model use `ask_frac` of the frame's token budget first (so a question can land mid-speech, a
barge-in), `ask`; then step the decoder until it chooses silence or the frame's budget is used
(tokens_per_frame = the record's tokens_per_second / fps: 150 for the small model's data). Speech that
runs past the budget continues after the next frame, as in the runtime where frames arrive by wall
clock. The result is a `Trace`: per frame interval what was spoken, and the speech segments with
their turn and start/end frames.

Scoring (`score_record`) per question kind:
- answer accuracy at the time of asking: the first speech under the question starts at or before
  answer_frame + 1 and contains every `accept` phrase (case/punctuation-insensitive, whole words;
  number words count as digits; "no" of a zero count also matches "0"/"none"/"zero");
- watch timeliness: for a watch whose event comes, the first speech under the question starts at the
  event frame or the next one and names the awaited object; a watch that never comes must stay silent
  (reported separately);
- revision recall: each expected revision (speech of type "revision" at frame r) is matched by speech
  under the question starting in [r, r + N] that contains its accept phrases (N = 2);
- narrate events: speech under the question starting within one frame of each event;
- false-speech rate: frames in meta.silent_frames whose interval holds any speech, over their number.
Expected speech that the record itself never spoke (spoken_frame null: cut or past the end) is not
scored.

Offline QA (`offline_answer`, `score_offline_record`): the reference offline format (one `<|video|>`
+ question in a user turn, no system turn) is prefilled and decoded greedily until silence or
max_new_tokens; the first sentence must contain the accept phrases derived from meta (describe:
word recall of the reference >= 0.5). `score_offline_rt` asks each real-time question offline over
the frames up to its answer frame (covers spatial and temporal order, which offline records lack).

Results aggregate into `Results` (Markdown table, JSON).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch

from engine import events as E
from engine import protocol as P
from engine.checkpoint import Checkpoint
from engine.decoding import Sampling, checkpoint_defaults
from engine.eval.scoring import Results, Segment, Tally, Trace, score_record
from engine.eval.text import first_sentence, matches, normalise
from engine.generation import StreamConfig, StreamDecoder
from engine.options import SessionConfig
from engine.perception import perceive_images
from engine.session import decoder_config

# Traces


class _SimClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def frames_of(record: dict, size: int, render_scale: float = 1.0) -> np.ndarray:
    """The record's frames at the model's size; render_scale > 1: rendered that much larger and
    area-downsampled, as frames of a larger video file reach the model."""
    from engine.data.synth import frames_for_record
    from engine.train.small import record_frames

    if render_scale == 1.0:
        return frames_for_record(record, (size, size))
    return record_frames(record, int(record["meta"]["n_frames"]), size, render_scale)


def replay(
    ckpt: Checkpoint,
    record: dict,
    system_prompt: str = P.REALTIME_SYSTEM_PROMPT,
    tokens_per_frame: int | None = None,
    max_segment_tokens: int = 96,
    frames: np.ndarray | None = None,
    decoder_hook: Callable[[StreamDecoder, dict], None] | None = None,
    sampling: Sampling | None = None,
    memory_frames: int | None = None,
    max_context: int = 4096,
) -> Trace:
    """Replay a real-time record through StreamDecoder with a simulated clock -> Trace.

    sampling: None = what a session of this checkpoint decodes with (its authors' defaults, or, for our
    own models, greedy with the loop guard), so the evaluation measures what a user gets.
    decoder_hook(decoder, meta) may patch the decoder before the replay (tests: a scripted oracle).
    """
    meta = record["meta"]
    F, fps = int(meta["n_frames"]), float(meta.get("fps") or 1.0)
    tpf = int(tokens_per_frame or round(float(meta.get("tokens_per_second") or 150.0) / fps))
    if frames is None:
        frames = frames_of(record, ckpt.cfg.vision.image_size)
    check = ckpt.world_check
    k, v, *feats = perceive_images(ckpt.model, frames[:F], features=check is not None)
    familiar = check.familiar(feats[0]) if check is not None else [None] * F
    clock = _SimClock()
    options = SessionConfig(
        system_prompt=system_prompt,
        memory_frames=memory_frames or max(F, 1),  # None: every frame stays (short records)
        max_context=max_context,
        max_segment_tokens=max_segment_tokens,
    )
    dec = StreamDecoder(ckpt.model, ckpt.tokenizer, decoder_config(ckpt, options, sampling), clock=clock)
    if decoder_hook is not None:
        decoder_hook(dec, meta)
    tr = Trace(F, [""] * F, [False] * F)
    open_seg: dict[int, Segment] = {}
    asks = {int(q["ask_frame"]): q for q in meta.get("questions", [])}
    state = {"f": 0, "used": 0}

    def handle(evs: list[E.Event]) -> None:
        f = state["f"]
        for ev in evs:
            if isinstance(ev, E.SpeechStart):
                open_seg[ev.segment] = seg = Segment(ev.segment, ev.turn, f)
                tr.segments.append(seg)
            elif isinstance(ev, E.Token):
                tr.text[f] += ev.text
                tr.spoke[f] = True
            elif isinstance(ev, E.SpeechEnd):
                seg = open_seg.pop(ev.segment, None)
                if seg is not None:
                    seg.end_frame, seg.text, seg.interrupted = f, ev.text, ev.interrupted

    def run(budget: int) -> None:
        while state["used"] < budget and not dec.waiting:
            clock.t = (state["f"] + state["used"] / max(tpf, 1)) / fps
            evs = dec.step()
            state["used"] += 1
            tr.tokens += 1
            handle(evs)

    for f in range(F):
        state["f"], state["used"] = f, 0
        clock.t = f / fps
        handle(dec.add_frame(k[f], v[f], f / fps, familiar[f]))
        q = asks.get(f)
        if q is not None:
            run(int(float(q.get("ask_frac", 0.5)) * tpf))
            handle(dec.ask(q["text"]))
            tr.turn_of[int(q["qid"])] = dec.turn
        run(tpf)
    for seg in open_seg.values():  # still speaking when the video ended
        seg.end_frame, seg.text = F - 1, dec.seg_text
    return tr


def frame_agreement(a, b, seeds: Iterable[int]) -> tuple[int, int]:
    """Two variants of one model (a quantized copy, another precision) replayed on the held-out
    streams of `seeds` -> (frames where both said the same text, frames)."""
    sp = a.system_prompt or P.REALTIME_SYSTEM_PROMPT
    same = total = 0
    for rec in synthetic_records(seeds, "realtime", sp):
        ta, tb = replay(a, rec, sp), replay(b, rec, sp)
        same += sum(x == y for x, y in zip(ta.text, tb.text, strict=True))
        total += len(ta.text)
    return same, total


def replay_wall(
    ckpt: Checkpoint,
    record: dict,
    system_prompt: str = P.REALTIME_SYSTEM_PROMPT,
    speed: float = 1.0,
    max_segment_tokens: int = 96,
    frames: np.ndarray | None = None,
) -> Trace:
    """Replay a real-time record through the real runtime (`Session`, its three threads, wall clock)
    -> Trace. Frames arrive on time at `speed` x the record's rate, whether or not the model is still
    speaking (as live); each question enters right after its frame. Slower than `replay` and not
    deterministic: it measures the product as users run it."""
    from engine.session import Session
    from engine.sources import SyntheticSource

    meta = record["meta"]
    F, fps = int(meta["n_frames"]), float(meta.get("fps") or 1.0)
    rate = fps * speed
    if frames is None:
        frames = frames_of(record, ckpt.cfg.vision.image_size)
    cfg = SessionConfig(
        fps=rate,
        memory_frames=max(F, 1),
        system_prompt=system_prompt,
        max_segment_tokens=max_segment_tokens,
        realtime=True,
    )
    session = Session(ckpt, config=cfg)
    questions = sorted(meta.get("questions", []), key=lambda q: int(q["ask_frame"]))
    for q in questions:
        session.ask(q["text"], at=int(q["ask_frame"]) / rate)
    session.start(SyntheticSource(list(frames[:F]), fps=rate, realtime=True))
    tr = Trace(F, [""] * F, [False] * F)
    open_seg: dict[int, Segment] = {}
    f, asked = 0, 0
    for ev in session.events(timeout=F / rate + 30):
        if isinstance(ev, E.FrameSeen):
            f = min(F - 1, int(round(ev.source_t * rate)))  # the source frame, even if one was dropped
        elif isinstance(ev, E.TurnStart) and ev.turn > 0 and asked < len(questions):
            tr.turn_of[int(questions[asked]["qid"])] = ev.turn
            asked += 1
        elif isinstance(ev, E.SpeechStart):
            open_seg[ev.segment] = seg = Segment(ev.segment, ev.turn, f)
            tr.segments.append(seg)
        elif isinstance(ev, E.Token):
            tr.text[f] += ev.text
            tr.spoke[f] = True
            tr.tokens += 1
        elif isinstance(ev, E.Silence):
            tr.tokens += 1
        elif isinstance(ev, E.SpeechEnd):
            seg = open_seg.pop(ev.segment, None)
            if seg is not None:
                seg.end_frame, seg.text, seg.interrupted = f, ev.text, ev.interrupted
    session.stop()
    for seg in open_seg.values():
        seg.end_frame = F - 1
    return tr


def oracle_trace(meta: dict) -> Trace:
    """The trace the record itself describes: each expected speech at the frame the record speaks it."""
    F = int(meta["n_frames"])
    tr = Trace(F, [""] * F, [False] * F)
    sid = 0
    for q in meta.get("questions", []):
        turn = int(q["qid"]) + 1
        tr.turn_of[int(q["qid"])] = turn
        for s in q.get("speech", []):
            f = s.get("spoken_frame")
            if f is None:
                continue
            tr.segments.append(Segment(sid, turn, f, f, s["text"]))
            tr.text[f] += s["text"]
            tr.spoke[f] = True
            sid += 1
    return tr


# ---------------------------------------------------------------------------------------------
# Offline QA


def offline_prompt_ids(
    tok, question: str, n_frames: int, system_prompt: str | None = None
) -> tuple[list, list]:
    """The reference offline layout -> (ids, positions of the <|image|> tokens in ids)."""
    parts: list[tuple[str, bool]] = []
    if system_prompt:
        parts += [
            (P.BOS + P.header("system"), True),
            (system_prompt, False),
            (P.EOT + P.header("user"), True),
        ]
    else:
        parts += [(P.BOS + P.header("user"), True)]
    head = tok.encode_parts(parts)
    ids = (
        head
        + [tok.image_id] * n_frames
        + tok.encode_parts([(question, False), (P.EOT + P.header("assistant"), True)])
    )
    return ids, list(range(len(head), len(head) + n_frames))


def offline_answer(
    ckpt: Checkpoint,
    k: torch.Tensor,
    v: torch.Tensor,
    question: str,
    max_new_tokens: int = 64,
    system_prompt: str | None = None,
) -> str:
    """Prefill all frames + the question (offline format), greedy decode until silence or the limit."""
    tok = ckpt.tokenizer
    n = int(k.shape[0])
    cfg = StreamConfig(memory_frames=max(n, 1), max_segment_tokens=max_new_tokens, max_context=4096)
    dec = StreamDecoder(ckpt.model, tok, cfg, clock=_SimClock())
    ids, img = offline_prompt_ids(tok, question, n, system_prompt)
    dec.load_prompt(ids, [(p, k[j], v[j]) for j, p in enumerate(img)])
    text = ""
    for _ in range(max_new_tokens + 1):
        evs = dec.step()
        for ev in evs:
            if isinstance(ev, E.SpeechEnd):
                return ev.text
            if isinstance(ev, E.Token):
                text += ev.text
        if dec.waiting:
            break
    return text


def offline_accept(q: dict) -> list[str] | None:
    """Accept phrases of an offline question from its meta (None: describe, scored by word recall)."""
    kind, value = q["kind"], q.get("value")
    if q.get("accept"):  # a real-time kind asked offline (synth.OFFLINE_RT_KINDS)
        return list(q["accept"])
    if kind in ("count_total", "final_display"):
        return [str(value)]
    if kind == "final_list":
        return list(value) or ["no"]
    if kind == "order":
        return [str(value)]
    return None


def _word_recall(text: str, ref: str) -> float:
    stop = {"a", "an", "the", "and", "is", "are", "to", "of", "in", "from", "at"}
    ref_w = [w for w in normalise(ref).split() if w not in stop]
    got = set(normalise(text).split())
    return sum(w in got for w in ref_w) / len(ref_w) if ref_w else 1.0


def score_offline_answer(q: dict, text: str) -> bool:
    accept = offline_accept(q)
    if accept is None:
        return _word_recall(text, q.get("answer", "")) >= 0.5
    return matches(first_sentence(text), accept, q["kind"])


def score_offline_record(
    ckpt: Checkpoint,
    record: dict,
    res: Results | None = None,
    max_new_tokens: int = 64,
    render_scale: float = 1.0,
) -> Results:
    res = res if res is not None else Results()
    meta = record["meta"]
    frames = frames_of(record, ckpt.cfg.vision.image_size, render_scale)[: int(meta["n_frames"])]
    k, v = perceive_images(ckpt.model, frames)
    res.offline_records += 1
    for q in meta.get("questions", []):
        text = offline_answer(ckpt, k, v, q["text"], max_new_tokens)
        ok = score_offline_answer(q, text)
        res.offline.setdefault(q["kind"], Tally()).add(ok)
    return res


def score_offline_rt(
    ckpt: Checkpoint,
    record: dict,
    res: Results | None = None,
    frames: np.ndarray | None = None,
    max_new_tokens: int = 48,
) -> Results:
    """Each answerable question of a real-time record asked offline over frames 0..answer_frame."""
    res = res if res is not None else Results()
    meta = record["meta"]
    if frames is None:
        frames = frames_of(record, ckpt.cfg.vision.image_size)
    k, v = perceive_images(ckpt.model, frames[: int(meta["n_frames"])])
    for q in meta.get("questions", []):
        answers = [s for s in q.get("speech", []) if s["type"] == "answer"]
        if q.get("answer_frame") is None or not answers or q["kind"] == "now":
            continue
        f = int(q["answer_frame"])
        text = offline_answer(ckpt, k[: f + 1], v[: f + 1], q["text"], max_new_tokens)
        ok = matches(first_sentence(text), answers[0].get("accept") or q.get("accept") or [], q["kind"])
        res.offline_rt.setdefault(q["kind"], Tally()).add(ok)
    return res


# ---------------------------------------------------------------------------------------------
# Synthetic suite


def synthetic_records(
    seeds: Iterable[int], kind: str = "realtime", system_prompt: str | None = None
) -> list[dict]:
    """The small model's records (same generator and packing as training, the fixed evaluation
    question mix `EVAL_KINDS`) for held-out seeds."""
    from engine.train.small import SMALL_SYSTEM_PROMPT, _from_synth

    out = []
    for s in seeds:
        rec = _from_synth(int(s), kind, system_prompt or SMALL_SYSTEM_PROMPT, heldout=True)
        if rec is not None:
            out.append(rec)
    return out


def evaluate_synthetic(
    ckpt: Checkpoint,
    seeds: Iterable[int],
    system_prompt: str,
    realtime: bool = True,
    offline: bool = False,
    offline_rt: bool = False,
    tokens_per_frame: int | None = None,
    progress: Callable[[str], None] | None = None,
    wall_speed: float | None = None,
    render_scale: float = 1.0,
    sampling: Sampling | None = None,
) -> Results:
    """Score the real-time replay (simulated clock; or the real runtime on the wall clock at
    `wall_speed` x real time), and optionally offline QA. render_scale: see frames_of."""
    res = Results()
    t0 = time.perf_counter()
    seeds = list(seeds)
    if realtime or offline_rt:
        for rec in synthetic_records(seeds, "realtime", system_prompt):
            frames = frames_of(rec, ckpt.cfg.vision.image_size, render_scale)
            if realtime and wall_speed:
                score_record(
                    rec["meta"], replay_wall(ckpt, rec, system_prompt, wall_speed, frames=frames), res
                )
            elif realtime:
                tr = replay(
                    ckpt,
                    rec,
                    system_prompt,
                    tokens_per_frame=tokens_per_frame,
                    frames=frames,
                    sampling=sampling,
                )
                score_record(rec["meta"], tr, res)
            if offline_rt:
                score_offline_rt(ckpt, rec, res, frames=frames)
            if progress:
                progress(f"seed {rec['meta']['seed']} done")
    if offline:
        for rec in synthetic_records(seeds, "offline", system_prompt):
            score_offline_record(ckpt, rec, res, render_scale=render_scale)
    res.seconds = time.perf_counter() - t0
    return res


def eval_worker(job: tuple) -> dict:
    """One worker process of `python -m engine.eval --workers N`: (model_dir, seeds, realtime,
    offline, offline_rt, torch threads, tokens_per_frame, render_scale, no_repeat_ngram) ->
    dataclasses.asdict(Results). no_repeat_ngram None: the checkpoint's decoding."""
    model_dir, seeds, realtime, offline, offline_rt, threads, tpf, scale, ngram = job
    torch.set_num_threads(threads)
    from engine.loading import load_checkpoint

    ckpt = load_checkpoint(model_dir)
    res = evaluate_synthetic(
        ckpt,
        seeds,
        load_system_prompt(model_dir),
        realtime=realtime,
        offline=offline,
        offline_rt=offline_rt,
        tokens_per_frame=tpf,
        render_scale=scale,
        sampling=None
        if ngram is None
        else dataclasses.replace(
            checkpoint_defaults(ckpt.generation_config, ckpt.mode),
            no_repeat_ngram=ngram,
        ),
    )
    return dataclasses.asdict(res)


def load_system_prompt(folder) -> str:
    """The checkpoint's generation.json system prompt (the runtime must use the trained one)."""
    from pathlib import Path

    p = Path(folder) / "generation.json"
    if p.exists():
        sp = json.loads(p.read_text(encoding="utf-8")).get("system_prompt")
        if sp:
            return sp
    return P.REALTIME_SYSTEM_PROMPT


# ---------------------------------------------------------------------------------------------
# External benchmarks (timed multiple-choice questions over real video files)


def read_video_frames(path, until_s: float, fps: float = 1.0, max_frames: int = 256) -> list[np.ndarray]:
    """RGB frames at `fps` from 0 to until_s (inclusive), the last max_frames of them."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    out: list[np.ndarray] = []
    try:
        n = int(np.floor(until_s * fps + 1e-6)) + 1
        for i in range(n):
            cap.set(cv2.CAP_PROP_POS_MSEC, 1000.0 * i / fps)
            ok, bgr = cap.read()
            if not ok:
                break
            out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    return out[-max_frames:]


def stream_answer(
    ckpt: Checkpoint,
    frames: list[np.ndarray],
    question: str,
    system_prompt: str = P.REALTIME_SYSTEM_PROMPT,
    tokens_per_frame: int = 150,
    wait_frames: int = 2,
    memory_frames: int = 64,
) -> str:
    """Feed frames (1 per interval) through the real-time decoder, ask after the last one, and
    return the first speech segment (waiting up to wait_frames more intervals, re-showing the last
    frame: the benchmark's clock stops at the question)."""
    if not frames:
        return ""
    k, v = perceive_images(ckpt.model, np.stack(frames))
    options = SessionConfig(system_prompt=system_prompt, memory_frames=memory_frames)
    dec = StreamDecoder(ckpt.model, ckpt.tokenizer, decoder_config(ckpt, options), clock=_SimClock())
    for i in range(len(frames)):
        dec.add_frame(k[i], v[i])
        n = 0
        while n < tokens_per_frame and not dec.waiting:
            dec.step()
            n += 1
    dec.ask(question)
    for extra in range(wait_frames + 1):
        if extra:
            dec.add_frame(k[-1], v[-1])
        n = 0
        while n < tokens_per_frame and not dec.waiting:
            for ev in dec.step():
                if isinstance(ev, E.SpeechEnd) and ev.turn == dec.turn:
                    return ev.text
            n += 1
        if dec.speaking:
            return dec.seg_text
    return ""

"""Dense captions -> training records in the MOSS-Video-Preview data format, real-time and offline.

Owns: question plans for world videos (what to ask, when, what to answer and when to speak again),
"what is happening now" plans for external captions, the layout of speech between frames
(`build_messages`), the structural checker `check_realtime_record` (validated on the reference data),
the ground truth under "meta", the optional paraphrase step and the command line. It knows nothing
of tokenizers (token counts are estimated, or come from a callable) nor of models.

    python -m engine.data.synth --seeds 0-99 --out data.jsonl [--captions external.json]
                                [--tokens-per-second 38] [--offline] [--write-videos]

Real-time record, as the reference data spells it (ARCHITECTURE 1.4, shared/data/moss-demo):

    {"messages": [{"role": "system", "content": REALTIME_SYSTEM_PROMPT}, {"role": "user", "content": ""},
                  {"role": "assistant", "content": "<|silence|><|video|><|silence|><|video|>...<|silence|>"},
                  {"role": "user", "content": "How many objects are there?"},
                  {"role": "assistant", "content": "<|silence|><|video|>There are 2 objects.<|silence|>..."}],
     "images": [],
     "videos": ["[RealTime QA][INFO]{\\"video_path\\": ..., \\"time_info\\": [\\"00:00\\", ...]}",
                "[RealTime QA][PLACEHOLDER]", ...],   # one entry per <|video|>
     "meta": {...}}

An assistant turn is pieces separated by <|video|> (one frame each); each piece is what the model says
in one interval: "<|silence|>", speech, or speech then "<|silence|>" once it has finished. Speech
longer than the interval's budget (tokens_per_second / fps tokens) runs past the frame
("...base of a red<|video|> and white..."). A question closes the turn where it lands: after
"<|silence|>", or mid-speech (cut, even mid-word). The answer turn then starts with
"<|silence|><|video|>" (answer after the next frame) or with the answer itself (right away).

Meta schema (loaders ignore it; an evaluation harness reads it). Frame f means "after the f-th
<|video|>": speech at f starts in the interval after frame f, having seen frames 0..f.

    meta = {
      "version": 1, "source": "world" | "captions", "video": video_path,
      "seed", "duration_s", "world_config": world videos only; make_video(seed, duration_s,
                                             WorldConfig(**world_config)) rebuilds the frames,
      "fps", "n_frames" (== number of <|video|>), "tokens_per_second",
      "silent_frames": [f, ...],       # frames whose piece is exactly <|silence|>: any speech there is false
      "questions": [{
        "qid", "kind",                   # count colour presence position display list watch order
                                         # spatial narrate (world); now (external captions)
        "text",                          # the user turn
        "ask_frame", "ask_frac",         # arrives after frame ask_frame, ask_frac of the way to the next
        "answer_frame": f | null,        # first answer spoken at f (== ask_frame: right after the question);
                                         # null when nothing is due at once (watch, narrate)
        "last_frame": f,                 # active up to and including f (next question's ask_frame, or end)
        "value", "accept",               # canonical first answer and phrases that must all occur in it
                                         # (case-insensitive, whole words). count: int; colour: "red";
                                         # presence/spatial: bool; position: "top left"; display: int;
                                         # list: ["small red circle", ...] left to right; order: "red
                                         # circle"; watch: the event frame (null: never comes);
                                         # now: caption index; narrate: null
        "speech": [{"frame", "type",     # type: answer | revision | watch | event; frame: when the
                    "value", "accept",   # change is first visible = when speech is due
                    "text",              # the text the record speaks
                    "spoken_frame",      # where it actually starts (later only when queued behind speech)
                    "cut"}],             # a later question interrupted it
        "silent_frames": [f, ...],       # frames in (ask_frame, last_frame] where silence is expected
        "info": {...}}]}                 # kind-specific: watch: colour, shape, comes, event_frame, decoys

Answers describe the state at the frame they are spoken after (answer_frame), not at ask_frame.
Offline records (reference offline format) carry meta with source, video, seed, duration_s,
world_config, fps, n_frames (the whole video) and questions [{"qid", "kind" (describe, count_total,
final_list, final_display, order), "text", "value", "answer"}].

Scores an evaluator can compute: accuracy at asking (first speech of type answer vs accept), watch
timeliness (speech within one frame of a watch entry's frame; no speech at all when comes is false),
revision recall (a revision entry matched within N frames), false-speech rate (speech on
meta.silent_frames).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from engine.data.captions import (
    DenseCaptions,
    describe_event,
    join_list,
    listing,
    load_captions,
    object_phrase,
    sentence,
)
from engine.data.layout import (
    INFO_PREFIX,
    PLACEHOLDER,
    Ask,
    build_messages,
    check_realtime_record,
    estimate_tokens,
    time_info,
)
from engine.data.plans import PLANNERS, Plan, Speech, _pick, _plan_order, _Scene
from engine.data.render import write_video
from engine.data.rewrite import OpenAIRewriter, Rewriter, _rewrite_plan
from engine.data.world import Video, WorldConfig, make_video
from engine.protocol import VIDEO


@dataclass(frozen=True)
class SynthConfig:
    tokens_per_second: float = 38.0  # the reference data was packed for a ~38 tok/s runtime
    fps: float = 1.0  # frames per second of the record (world videos carry their own)
    p_immediate: float = 0.25  # answer right after the question instead of after the next frame
    max_questions: int = 3
    min_gap: int = 3  # frames between questions, unless barging in
    max_gap: int = 8
    p_barge_in: float = 0.1  # ask while the previous answer is being spoken (it gets cut)
    # watch requests: share that prefer a target whose decoy (same colour or shape) arrives after the
    # question, where a model that binds attributes loosely speaks too early (0 = no preference)
    p_arriving_decoy: float = 0.0
    max_frames: int = 256  # external captions: longer videos are cut (the model saw <= 4096 tokens)
    video_dir: str = "world"  # world videos are referred to as video_dir/world_SEED.mp4
    kinds: tuple[tuple[str, float], ...] = (
        ("count", 0.15), ("colour", 0.13), ("list", 0.13), ("watch", 0.18), ("display", 0.09),
        ("presence", 0.09), ("position", 0.07), ("spatial", 0.07), ("order", 0.05), ("narrate", 0.04),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Records


def world_record(
    video: Video,
    rng: np.random.Generator,
    cfg: SynthConfig = SynthConfig(),
    rewriter: Rewriter | None = None,
    rewrite_answers: bool = False,
    count_tokens: Callable[[str], int] = estimate_tokens,
) -> dict | None:
    """One real-time record with 1..max_questions questions about a world video (None if too short)."""
    sc, F = _Scene(video, cfg.p_arriving_decoy), video.n_frames
    if F < 4:
        return None
    names = [k for k, _ in cfg.kinds]
    weights = np.asarray([w for _, w in cfg.kinds], float)
    n_q = 1 + int(rng.choice(3, p=[0.5, 0.35, 0.15]))
    n_q = min(n_q, cfg.max_questions)
    plans: list[Plan] = []
    a, frac = int(rng.integers(1, max(2, F // 3))), float(rng.uniform(0.1, 0.9))
    while len(plans) < n_q and a <= F - 2:
        ans = a if rng.random() < cfg.p_immediate else a + 1
        plan = None
        order = rng.choice(names, size=len(names), replace=False, p=weights / weights.sum())
        used = {p.kind for p in plans}
        for kind in sorted(order, key=lambda k: k in used):  # a kind already asked only as a last resort
            plan = PLANNERS[str(kind)](sc, a, ans, rng)
            if plan is not None:
                break
        if plan is None:
            a += 1
            continue
        plans.append(replace(plan, ask_frame=a, ask_frac=frac))
        if plan.answer_frame is not None and plan.answer_frame > a and rng.random() < cfg.p_barge_in:
            a, frac = plan.answer_frame, float(rng.uniform(0.02, 0.15))  # lands mid-answer
        else:
            lo = max(plan.busy_until + 1, a + cfg.min_gap)
            a, frac = int(rng.integers(lo, lo + cfg.max_gap)), float(rng.uniform(0.1, 0.9))
        if a > plan.valid_until:
            break
    if not plans:
        return None
    n_frames = min(F, plans[-1].valid_until + 1)
    base = {
        "source": "world",
        "video": f"{cfg.video_dir}/{video.path}" if cfg.video_dir else video.path,
        "seed": video.seed,
        "duration_s": video.duration_s,
        "world_config": asdict(video.config),
    }
    if rewriter is not None:
        plans = [_rewrite_plan(p, rewriter, rewrite_answers) for p in plans]
    return _assemble(plans, n_frames, video.fps, base, cfg, count_tokens)


def long_world_record(
    seed: int,
    duration_s: int,
    ask_every_s: float = 60.0,
    kinds: Sequence[str] = ("count", "display"),
    cfg: SynthConfig = SynthConfig(),
) -> dict | None:
    """A minutes-long world video with a question every `ask_every_s` seconds (the kinds in turn), for
    the long-stream evaluation: are answers still right after 10 minutes, after compaction?"""
    video = make_video(seed, duration_s)
    rng = np.random.default_rng([seed, 11])
    sc, F = _Scene(video, cfg.p_arriving_decoy), video.n_frames
    plans: list[Plan] = []
    step = max(2, int(round(ask_every_s * video.fps)))
    for n, a in enumerate(range(step, F - 2, step)):
        for kind in list(kinds[n % len(kinds) :]) + list(kinds[: n % len(kinds)]):
            plan = PLANNERS[kind](sc, a, a + 1, rng)
            if plan is not None:
                plans.append(replace(plan, ask_frame=a, ask_frac=0.5))
                break
    if not plans:
        return None
    base = {
        "source": "world",
        "video": f"{cfg.video_dir}/{video.path}" if cfg.video_dir else video.path,
        "seed": video.seed,
        "duration_s": video.duration_s,
        "world_config": asdict(video.config),
    }
    return _assemble(plans, F, video.fps, base, cfg, estimate_tokens)


def _assemble(
    plans: list[Plan], n_frames: int, fps: float, base: dict, cfg: SynthConfig, count_tokens
) -> dict:
    """Lay the plans out as messages and write the ground truth."""
    speeches: list[tuple[int, str]] = []
    owner: list[tuple[int, Speech]] = []
    asks = []
    last = [plans[i + 1].ask_frame if i + 1 < len(plans) else n_frames - 1 for i in range(len(plans))]
    for i, p in enumerate(plans):
        answer = None
        for s in p.speeches:
            if s.frame > last[i]:
                continue
            if s.type == "answer" and s.frame == p.ask_frame:
                answer = len(speeches)
            speeches.append((s.frame, s.text))
            owner.append((i, s))
        asks.append(Ask(p.ask_frame, p.ask_frac, p.text, answer))
    tpf = cfg.tokens_per_second / fps
    messages, layout = build_messages(n_frames, asks, speeches, tpf, count_tokens)
    silent = [f for f, k in enumerate(layout.frame_kind) if k == "silence"]
    questions = []
    for i, p in enumerate(plans):
        spoken = [
            {
                "frame": s.frame,
                "type": s.type,
                "value": s.value,
                "accept": list(s.accept),
                "text": s.text,
                "spoken_frame": layout.spoken_frame[j],
                "cut": layout.cut[j],
            }
            for j, (qi, s) in enumerate(owner)
            if qi == i
        ]
        questions.append(
            {
                "qid": i,
                "kind": p.kind,
                "text": p.text,
                "ask_frame": p.ask_frame,
                "ask_frac": round(p.ask_frac, 3),
                "answer_frame": p.answer_frame,
                "last_frame": last[i],
                "value": p.value,
                "accept": list(p.accept),
                "speech": spoken,
                "silent_frames": [f for f in silent if p.ask_frame < f <= last[i]],
                "info": p.info,
            }
        )
    videos = [INFO_PREFIX + json.dumps({"video_path": base["video"], "time_info": time_info(n_frames, fps)})]
    meta = {"version": 1, "source": base["source"], "video": base["video"]}
    meta.update({k: base.get(k) for k in ("seed", "duration_s", "world_config")})
    meta.update(
        fps=fps,
        n_frames=n_frames,
        tokens_per_second=cfg.tokens_per_second,
        silent_frames=silent,
        questions=questions,
    )
    return {
        "messages": messages,
        "images": [],
        "videos": videos + [PLACEHOLDER] * (n_frames - 1),
        "meta": meta,
    }


def caption_record(
    dc: DenseCaptions,
    rng: np.random.Generator,
    cfg: SynthConfig = SynthConfig(),
    rewriter: Rewriter | None = None,
    count_tokens: Callable[[str], int] = estimate_tokens,
) -> dict | None:
    """ "What is happening now?" over external captions: answered from the caption active at the answer
    frame, re-answered whenever a newer caption starts, silent between captions."""
    fps = cfg.fps
    F = min(int(dc.duration * fps + 1e-9), cfg.max_frames)
    if F < 3:
        return None
    spans = []  # (first frame, end frame exclusive, caption index)
    for i, c in enumerate(dc.captions):
        sf = math.ceil(c.start * fps - 1e-9)
        if sf < F:
            spans.append((sf, min(F, max(sf + 1, math.ceil(c.end * fps - 1e-9))), i))

    def active(f: int) -> int | None:
        live = [(sf, i) for sf, ef, i in spans if sf <= f < ef]
        return max(live)[1] if live else None  # the most recently started caption

    immediate = rng.random() < cfg.p_immediate
    cands = [
        a for a in range(F - 1) if active(a) is not None and active(a if immediate else a + 1) is not None
    ]
    if not cands:
        return None
    a = _pick(rng, cands[: max(1, int(len(cands) * 0.6))])
    ans = a if immediate else a + 1
    start = {i: sf for sf, _, i in spans}

    def say(i: int) -> str:
        return sentence(dc.captions[i].sentence)

    sp = [Speech(ans, say(active(ans)), "answer", active(ans))]
    for f in range(ans + 1, F):
        i = active(f)
        if i is not None and i != active(f - 1) and start[i] == f:
            sp.append(Speech(f, say(i), "revision", i))
    q = _pick(rng, ["What is happening now?", "What's going on right now?", "Tell me what is happening."])
    plan = Plan("now", q, ans, tuple(sp), active(ans), (), ans, F - 1, {}, a, float(rng.uniform(0.1, 0.9)))
    if rewriter is not None:
        plan = _rewrite_plan(plan, rewriter, False)
    return _assemble([plan], F, fps, {"source": "captions", "video": dc.video}, cfg, count_tokens)


# Real-time question kinds that also make offline questions (asked over the video up to the frame
# they are about, so both checkpoints learn them and the offline-vs-real-time comparison covers them).
OFFLINE_RT_KINDS = ("count", "colour", "presence", "position", "spatial", "list", "display")


def _offline_rt_record(video: Video, rng: np.random.Generator, cfg: SynthConfig) -> dict | None:
    """A real-time kind asked offline: the video clipped after frame f, the answer true at f."""
    sc = _Scene(video)
    f = int(rng.integers(0, video.n_frames))
    for kind in rng.permutation(OFFLINE_RT_KINDS):
        plan = PLANNERS[str(kind)](sc, f, f, rng)
        answers = [s for s in plan.speeches if s.type == "answer" and s.frame == f] if plan else []
        if answers:
            break
    else:
        return None
    meta = _offline_meta(video, cfg)
    meta["n_frames"] = f + 1  # the clip: frames 0..f
    meta["questions"] = [
        {
            "qid": 0,
            "kind": plan.kind,
            "text": plan.text,
            "value": plan.value,
            "answer": answers[0].text,
            "accept": list(answers[0].accept or plan.accept),
        }
    ]
    return _offline(plan.text, answers[0].text, meta["video"], meta)


def _offline_meta(video: Video, cfg: SynthConfig) -> dict:
    path = f"{cfg.video_dir}/{video.path}" if cfg.video_dir else video.path
    meta = {
        "version": 1,
        "source": "world",
        "video": path,
        "seed": video.seed,
        "duration_s": video.duration_s,
    }
    meta.update(world_config=asdict(video.config), fps=video.fps, n_frames=video.n_frames)
    return meta


def world_offline_record(
    video: Video, rng: np.random.Generator, cfg: SynthConfig = SynthConfig(), p_realtime_kind: float = 0.0
) -> dict:
    """One offline QA record in the reference offline format: a question about the whole video, or
    (with probability p_realtime_kind) a real-time kind asked about the end of a clip of it."""
    if p_realtime_kind and rng.random() < p_realtime_kind:
        rec = _offline_rt_record(video, rng, cfg)
        if rec is not None:
            return rec
    sc, last = _Scene(video), video.n_frames - 1
    options = ["describe", "count_total", "final_list"] + (["final_display"] if video.display else [])
    plan = _plan_order(sc, last, last, rng)
    if plan is not None:
        options.append("order")
    kind = _pick(rng, options)
    if kind == "describe":
        q, value = "Describe what happens in the video.", [describe_event(e, video) for e in video.events]
        a = " ".join(value) if value else "Nothing changes in the video."
    elif kind == "count_total":
        value = len(sc.first_seen)
        q, a = "How many different objects appear in the video?", f"{value} different objects appear."
        if value == 1:
            a = "1 object appears."
    elif kind == "final_list":
        objs = sorted(sc.objs(last), key=lambda o: (o.x, o.y))  # the order listing() speaks them in
        items, value = listing(sc.objs(last)), [object_phrase(o) for o in objs]
        q, a = "What is on the screen at the end of the video?", f"At the end I see {join_list(items)}."
        if not items:
            a = "At the end there are no objects."
    elif kind == "final_display":
        value = sc.states[last].display
        q, a = "What number does the display show at the end?", f"At the end the display shows {value}."
    else:
        q, a, value = plan.text, plan.speeches[0].text, plan.value
    meta = _offline_meta(video, cfg)
    meta["questions"] = [{"qid": 0, "kind": kind, "text": q, "value": value, "answer": a}]
    return _offline(q, a, meta["video"], meta)


def caption_offline_record(dc: DenseCaptions, cfg: SynthConfig = SynthConfig()) -> dict | None:
    if not dc.captions:
        return None
    q, a = "What happens in the video?", " ".join(sentence(c.sentence) for c in dc.captions)
    n = int(dc.duration * cfg.fps + 1e-9)
    meta = {"version": 1, "source": "captions", "video": dc.video, "fps": cfg.fps, "n_frames": n}
    meta["questions"] = [{"qid": 0, "kind": "describe", "text": q, "value": None, "answer": a}]
    return _offline(q, a, dc.video, meta)


def _offline(q: str, a: str, path: str, meta: dict) -> dict:
    messages = [{"role": "user", "content": VIDEO + q}, {"role": "assistant", "content": a}]
    return {"messages": messages, "videos": [path], "meta": meta}


def video_from_meta(meta: dict) -> Video:
    if meta.get("source") != "world" or meta.get("seed") is None:
        raise ValueError("only world records can be rendered; an external video comes from its file")
    return make_video(meta["seed"], meta["duration_s"], WorldConfig(**meta["world_config"]))


def frames_for_record(
    record: dict, size: int | tuple[int, int] = (64, 64), n: int | None = None
) -> np.ndarray:
    """The frames a world record refers to, (F, H, W, 3) uint8 RGB, without any file: one per
    <|video|> for a real-time record, the whole video for an offline one (or the first n)."""
    meta = record.get("meta")
    if not isinstance(meta, dict):
        raise ValueError("record has no 'meta': it was not made by engine.data.synth")
    return video_from_meta(meta).frames(size, n=meta["n_frames"] if n is None else n)


@dataclass(frozen=True)
class WorldFrames:
    """engine.data.loader's FrameProvider for world records: frames rendered from meta, no files."""

    size: int | tuple[int, int] = (64, 64)

    def __call__(self, record: dict, n_frames: int) -> np.ndarray:
        return frames_for_record(record, self.size, n_frames)


# ---------------------------------------------------------------------------------------------
# Command line


def parse_seeds(spec: str) -> list[int]:
    """ "0-99", "7", "0-9,20-29" -> seeds."""
    out = []
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"--seeds: expected N, N-M or a comma list of those, got {spec!r}")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.data.synth", description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0-99", help="world seeds: N, N-M or a comma list")
    ap.add_argument("--out", required=True, help="JSONL file to write")
    ap.add_argument("--captions", help="external dense captions (JSON); records from them, not the world")
    ap.add_argument("--tokens-per-second", type=float, default=38.0)
    ap.add_argument("--fps", type=float, default=1.0)
    ap.add_argument("--offline", action="store_true", help="offline QA records instead of real-time ones")
    ap.add_argument("--records-per-video", type=int, default=1)
    ap.add_argument("--p-immediate", type=float, default=SynthConfig.p_immediate)
    ap.add_argument("--video-dir", default="world", help="world videos are named VIDEO_DIR/world_SEED.mp4")
    ap.add_argument("--write-videos", action="store_true", help="also write the world mp4s next to --out")
    ap.add_argument("--video-size", default="360x640", help="HxW (or N) of written videos")
    ap.add_argument("--rewrite-url", help="OpenAI-compatible server for paraphrasing (off by default)")
    ap.add_argument("--rewrite-model", help="model name on that server")
    ap.add_argument("--rewrite-key-env", help="environment variable holding the server's API key")
    ap.add_argument("--rewrite-answers", action="store_true", help="paraphrase answers too (values checked)")
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    seeds = parse_seeds(args.seeds)
    cfg = SynthConfig(
        tokens_per_second=args.tokens_per_second,
        fps=args.fps,
        p_immediate=args.p_immediate,
        video_dir=args.video_dir,
    )
    rewriter = None
    if args.rewrite_url:
        if not args.rewrite_model:
            raise ValueError("--rewrite-url needs --rewrite-model")
        key = os.environ.get(args.rewrite_key_env) if args.rewrite_key_env else None
        rewriter = OpenAIRewriter(args.rewrite_url, args.rewrite_model, key)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    size = tuple(int(x) for x in args.video_size.lower().split("x")) if args.video_size else (360, 640)
    size = size * 2 if len(size) == 1 else size
    kinds: Counter = Counter()
    n = 0
    with out.open("w", encoding="utf-8") as fh:
        for rec in _records(args, seeds, cfg, rewriter, out.parent, size):
            if not args.offline:
                check_realtime_record(rec)  # a failure here is a bug in this module
            kinds.update(q["kind"] for q in rec["meta"]["questions"])
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    print(f"wrote {n} records to {out}; questions: {dict(sorted(kinds.items()))}", file=sys.stderr)
    return 0


def _records(args, seeds, cfg: SynthConfig, rewriter, root: Path, size):
    if args.captions:
        for i, dc in enumerate(load_captions(args.captions)):
            for j in range(args.records_per_video):
                rng = np.random.default_rng([seeds[0] if seeds else 0, i, j, 2])
                rec = (
                    caption_offline_record(dc, cfg)
                    if args.offline
                    else caption_record(dc, rng, cfg, rewriter)
                )
                if rec is not None:
                    yield rec
        return
    for seed in seeds:
        video = make_video(seed, config=WorldConfig(fps=args.fps))
        if args.write_videos:
            (root / cfg.video_dir).mkdir(parents=True, exist_ok=True)
            write_video(video, str(root / cfg.video_dir / video.path), size)
        for j in range(args.records_per_video):
            rng = np.random.default_rng([seed, j, 1])  # apart from the world's own stream
            if args.offline:
                yield world_offline_record(video, rng, cfg)
            else:
                rec = world_record(video, rng, cfg, rewriter, args.rewrite_answers)
                if rec is not None:
                    yield rec


if __name__ == "__main__":
    sys.exit(main())

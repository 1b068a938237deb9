"""The small embedded model: its config preset, its short system prompt, its tokenizer corpus, and the
synthetic records it trains on (procedural world videos, rendered on the fly).

Records come from `engine.data.synth` when it offers a seed -> record function; otherwise from the
minimal builder below (count / colour / list questions with silence and revisions), which keeps the
trainer usable and testable on its own. Every record carries `meta` = {"seed", "duration", "kind"}
so that its frames can be re-rendered from the seed.

Held-out evaluation seeds (EVAL_SEEDS) are never drawn: training seeds start at TRAIN_SEED_BASE.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from engine import protocol
from engine.config import MOSS, ModelConfig, TextConfig, VisionConfig
from engine.data.loader import REALTIME_INFO

# Seeds are split once, in code: training draws from TRAIN_SEED_BASE up, evaluation only from
# HELD_OUT (which training can never produce; the generator asserts it, the eval command refuses
# anything else). EVAL_SEEDS is the README's standard held-out set.
TRAIN_SEED_BASE = 10_000
HELD_OUT = range(1000, TRAIN_SEED_BASE)
EVAL_SEEDS = range(1000, 1200)
assert EVAL_SEEDS.start >= HELD_OUT.start and EVAL_SEEDS.stop <= HELD_OUT.stop
FRAME_SIZE = 64
# Short real-time prompt of the small model (the reference prompt costs ~200 tokens per stream).
# The runtime must use the same prompt: it is written to generation.json next to the weights.
SMALL_SYSTEM_PROMPT = (
    "You watch the camera in real time. Answer from what you see; when you cannot answer or have "
    f"finished, output {protocol.SILENCE}."
)


def small_config(vocab_size: int, image_token_id: int) -> ModelConfig:
    """~6 M parameters: 64x64 frames, patch 8 (8x8 grid + CLS = 65 tokens per frame, no pooling)."""
    vision = VisionConfig(
        hidden_size=128,
        num_layers=4,
        num_global_layers=1,
        num_heads=4,
        intermediate_size=512,
        image_size=FRAME_SIZE,
        patch_size=8,
        max_num_tiles=1,
        max_aspect_ratio_id=1,
        intermediate_layers=(1, 3),
        vision_output_dim=128 * 3,
    )
    text = TextConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        num_layers=6,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=768,
        rope_theta=10000.0,
        rope_scaling=None,
        cross_attention_layers=(1, 3, 5),
        max_position_embeddings=4096,
    )
    video = dataclasses.replace(MOSS, pool_stride=1, image_token_id=image_token_id, resize="fast")
    cfg = ModelConfig(vision=vision, text=text, video=video)
    cfg.validate()
    return cfg


# What a small model of the procedural world says when asked about video unlike that world (the
# session uses it only once engine.novelty's check is fitted for the model: python -m engine.eval.novelty)
OUT_OF_WORLD_ANSWER = (
    "I only know the world I was trained on: coloured shapes moving over a textured background. "
    "This video looks different, so I cannot tell you about it."
)


# The text positions a small model learns: its training streams are 96-387 tokens long (median 167,
# held-out seeds 1000-1199), so a live stream is compacted to stay under 384 (the session caps its
# context there): at 4096 the answers decay after three minutes (positions never seen in training).
TRAINED_CONTEXT = 384


def write_generation_json(folder: str | Path, system_prompt: str) -> None:
    p = Path(folder) / "generation.json"
    gen = {
        "system_prompt": system_prompt,
        "out_of_world_answer": OUT_OF_WORLD_ANSWER,
        "trained_context": TRAINED_CONTEXT,
    }
    p.write_text(json.dumps(gen, indent=2) + "\n", encoding="utf-8")


# ---- records ----------------------------------------------------------------------------------------

STAGE_MIX = {  # kind -> probability, per stage (a stage mixes in a few records of the other kinds)
    "align": {"caption": 0.8, "offline": 0.1, "realtime": 0.1},
    "offline": {"caption": 0.1, "offline": 0.8, "realtime": 0.1},
    "realtime": {"caption": 0.05, "offline": 0.15, "realtime": 0.8},
}


def seed_for(index: int, rank: int = 0, world: int = 1) -> int:
    """Training seed of the index-th record of one rank: disjoint across ranks, never a held-out seed."""
    if index < 0 or not 0 <= rank < world:
        raise ValueError(f"record index {index} / rank {rank} of {world} has no training seed")
    return TRAIN_SEED_BASE + index * world + rank


def synthetic_record(seed: int, stage: str, system_prompt: str = SMALL_SYSTEM_PROMPT) -> dict:
    if seed in HELD_OUT:
        raise ValueError(f"seed {seed} is a held-out evaluation seed")
    rng = np.random.default_rng([seed, 7])
    mix = STAGE_MIX[stage]
    kind = str(rng.choice(list(mix), p=list(mix.values())))
    rec = _from_synth(seed, kind, system_prompt)
    if rec is None:
        rec = _fallback_record(seed, kind, system_prompt, rng)
    return rec


# Answers are packed for the runtime's real decode speed: the small model decodes >= 150 tok/s on a
# 2-core CPU, so a whole answer fits between two frames (the reference packed for ~38 tok/s).
SYNTH_TOKENS_PER_SECOND = 150.0
# Question mix of the small model: the attribute-binding kinds (colour of one named object, lists,
# presence of a colour+shape) weigh more than synth's default; they are the hard ones at this size.
# Watch requests weigh 0.18 since rt5: their misses are false alarms on decoys (binding again).
SMALL_KINDS = (
    ("count", 0.14), ("colour", 0.18), ("list", 0.13), ("watch", 0.18), ("display", 0.07),
    ("presence", 0.11), ("position", 0.05), ("spatial", 0.06), ("order", 0.04), ("narrate", 0.04),
)  # fmt: skip
# Watch requests in training prefer, this often, a target whose decoy arrives after the question (rt6 on).
P_ARRIVING_DECOY = 0.6
# The question mix of the held-out evaluation streams, fixed so that results stay comparable when the
# training mix changes (it is SMALL_KINDS as it was up to rt4; no arriving-decoy preference).
EVAL_KINDS = (
    ("count", 0.14), ("colour", 0.18), ("list", 0.15), ("watch", 0.15), ("display", 0.07),
    ("presence", 0.11), ("position", 0.06), ("spatial", 0.06), ("order", 0.04), ("narrate", 0.04),
)  # fmt: skip
# Share of offline records that ask a real-time kind about the end of a clip (synth.OFFLINE_RT_KINDS).
P_OFFLINE_REALTIME_KIND = 0.5


def _from_synth(seed: int, kind: str, system_prompt: str, heldout: bool = False) -> dict | None:
    """engine.data.synth's record for (seed, kind): real-time QA, or offline QA (also used for the
    align stage: its "describe" questions are captions of the whole video). `heldout`: the fixed
    question mix of the evaluation streams instead of the training one."""
    from engine.data import synth
    from engine.data.world import make_video

    rng = np.random.default_rng([seed, 11])
    cfg = synth.SynthConfig(
        tokens_per_second=SYNTH_TOKENS_PER_SECOND,
        kinds=EVAL_KINDS if heldout else SMALL_KINDS,
        p_arriving_decoy=0.0 if heldout else P_ARRIVING_DECOY,
    )
    video = make_video(seed)
    rec = (
        synth.world_record(video, rng, cfg)
        if kind == "realtime"
        else synth.world_offline_record(video, rng, cfg, p_realtime_kind=P_OFFLINE_REALTIME_KIND)
    )
    if rec is None:
        return None
    if rec["messages"][0]["role"] == "system":
        rec["messages"][0]["content"] = system_prompt
    rec["meta"]["kind"] = kind
    rec["meta"].setdefault("duration", rec["meta"].get("duration_s"))
    return rec


def _video(seed: int, duration: int):
    from engine.data.world import make_video

    return make_video(seed, duration)


def _names(objs) -> list[str]:
    return [f"a {o.colour} {o.shape}" for o in objs]


def _list_text(objs) -> str:
    if not objs:
        return "Nothing is on screen."
    n = _names(objs)
    s = n[0] if len(n) == 1 else ", ".join(n[:-1]) + " and " + n[-1]
    return s[0].upper() + s[1:] + "."


def _count_text(n: int) -> str:
    words = ["no", "one", "two", "three", "four", "five", "six"]
    w = words[n] if n < len(words) else str(n)
    return f"There {'is' if n == 1 else 'are'} {w} shape{'' if n == 1 else 's'}."


def _question(rng, objs):
    """A question about the current frame -> (question, answer_fn(state) -> str)."""
    shapes = {}
    for o in objs:
        shapes.setdefault(o.shape, []).append(o)
    unique = [s for s, v in shapes.items() if len(v) == 1]
    kinds = ["count", "list"] + (["colour"] * 2 if unique else [])
    k = str(rng.choice(kinds))
    if k == "count":
        return "How many shapes are on screen?", lambda st: _count_text(len(st.objects))
    if k == "list":
        return "What is on screen?", lambda st: _list_text(st.objects)
    shape = str(rng.choice(unique))

    def colour(st):
        c = [o.colour for o in st.objects if o.shape == shape]
        if not c:
            return f"I see no {shape}."
        return f"The {shape} is {c[0]}." if len(c) == 1 else f"The {shape}s are " + " and ".join(c) + "."

    return f"What colour is the {shape}?", colour


def _fallback_record(seed: int, kind: str, system_prompt: str, rng) -> dict:
    duration = int(rng.integers(12, 25))
    v = _video(seed, duration)
    meta = {"seed": seed, "duration": duration, "kind": kind, "size": FRAME_SIZE}
    path = v.path
    if kind == "caption":  # one frame, describe it
        i = int(rng.integers(0, v.n_frames))
        meta["frame"] = i
        return {
            "messages": [
                {"role": "user", "content": f"{protocol.IMAGE}What is on screen?"},
                {"role": "assistant", "content": _list_text(v.states[i].objects)},
            ],
            "images": [f"{path}#{i}"],
            "meta": meta,
        }
    if kind == "offline":  # whole video, question about the last frame or the count over time
        st = v.states[-1]
        q, ans = _question(rng, st.objects)
        q = q.replace("on screen", "on screen at the end")
        return {
            "messages": [
                {"role": "system", "content": system_prompt},
                {"role": "user", "content": f"{protocol.VIDEO}{q}"},
                {"role": "assistant", "content": ans(st)},
            ],
            "videos": [path],
            "meta": meta,
        }
    # real-time: silence per frame, a question at frame qf, answer, revisions when the answer changes
    qf = int(rng.integers(1, max(2, v.n_frames - 3)))
    q, ans = _question(rng, v.states[qf].objects)
    parts = [protocol.SILENCE + protocol.VIDEO for _ in range(qf)]
    msgs = [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": "".join(parts)},
        {"role": "user", "content": q},
    ]
    body, last = [], None
    for i in range(qf, v.n_frames):
        a = ans(v.states[i])
        body.append((a if a != last else protocol.SILENCE) + protocol.VIDEO)
        last = a
    msgs.append({"role": "assistant", "content": "".join(body)})
    times = [f"{i // 60:02d}:{i % 60:02d}" for i in range(v.n_frames)]
    info = REALTIME_INFO + json.dumps({"video_path": path, "time_info": times})
    return {"messages": msgs, "videos": [info] + [path] * (v.n_frames - 1), "meta": meta}


# Training frames are rendered at size x scale and area-downsampled to size with these odds, as a video
# file of a larger size reaches the model (cleaner noise, visible unlit display segments). Trained only
# on native renders, the shipped model loses on such frames (README: "the video-file gap").
RENDER_SCALES = (1.0, 1.0, 1.5, 2.0, 3.0, 5.0)


def record_frames(record: dict, n: int, size: int = FRAME_SIZE, scale: float = 1.0) -> np.ndarray:
    """The record's first n frames (one per second), rendered from its seed: (n, size, size, 3) uint8.
    scale > 1: rendered at round(size * scale) and area-downsampled, like a larger video file."""
    if scale != 1.0:  # the runtime's own resize (preprocess.fit_tile): what a larger video file gets
        from engine.preprocess import fit_tile

        big = record_frames(record, n, int(round(size * scale)))
        return np.stack([fit_tile(f, size) for f in big])
    if n == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    m = record["meta"]
    if m.get("source") == "world":
        from engine.data import synth

        frames = synth.frames_for_record(record, (size, size))
    else:  # the fallback builder's records
        v = _video(m["seed"], m["duration"])
        idx = [m["frame"]] * n if m.get("kind") == "caption" else list(range(min(n, v.n_frames)))
        frames = np.stack([v.render(int(i), size) for i in idx])
    if len(frames) < n:  # never expected at 1 fps; repeat the last frame rather than fail
        frames = np.concatenate([frames, np.repeat(frames[-1:], n - len(frames), 0)])
    return frames[:n]


def video_seconds(record: dict):
    """video_seconds callable for the loader (offline records of the world)."""
    m = record["meta"]
    if m.get("n_frames") and m.get("fps"):  # world offline records (possibly a clip of the video)
        d = float(m["n_frames"]) / float(m["fps"])
    else:
        d = float(m.get("duration_s") or m["duration"])
    return lambda path: d


def tokenizer_corpus(n_records: int = 400, system_prompt: str = SMALL_SYSTEM_PROMPT) -> list[str]:
    """Text for the tokenizer: system prompts, questions, answers of training-seed records."""
    from engine.data import world

    texts = [system_prompt, protocol.REALTIME_SYSTEM_PROMPT]
    texts += [f"a {c} {s}" for c in world.COLOURS for s in world.SHAPES]
    for i in range(n_records):
        rec = synthetic_record(seed_for(i), ("align", "offline", "realtime")[i % 3], system_prompt)
        texts += [m["content"] for m in rec["messages"]]
    return texts

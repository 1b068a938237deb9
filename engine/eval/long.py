"""Long streams and video unlike the training world: the evaluation splits a user meets first.

- `evaluate_long`: minutes-long world videos (5 or 20 minutes) with a count or display question every
  minute, replayed with the runtime's bounded memory (`memory_frames`, the text context compacted at
  4096 tokens) or with every frame kept; answers scored by minute, so "still right after 10 minutes"
  and "right after compaction" are numbers.
- `evaluate_ood`: video the model never saw anything like (camera noise, a screen of text and
  windows, natural textures), nobody asking: how many lines a minute it says unasked, and loops.
- `repetition`: distinct-n, the longest run of the same line, lines per minute, segments with a
  repeated 3-word run: the metrics of talking too much or in circles.

Seeds come from the held-out range only (`engine.train.small.HELD_OUT`); the OOD videos are made
here and are unlike anything the training generator draws. Knows nothing of Qt or threads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.eval.harness import replay
from engine.eval.scoring import Results, answer_at_asking, score_record
from engine.eval.text import normalise

OOD_KINDS = ("camera", "screen", "texture")


@dataclass
class Repetition:
    lines: int = 0  # speech segments
    minutes: float = 0.0
    longest_same_run: int = 0  # the most consecutive segments saying the same thing
    looping_segments: int = 0  # segments in which a run of 3 words comes back
    words: list[str] = field(default_factory=list)

    @property
    def lines_per_minute(self) -> float:
        return self.lines / self.minutes if self.minutes else 0.0

    def distinct(self, n: int) -> float:
        grams = [tuple(self.words[i : i + n]) for i in range(len(self.words) - n + 1)]
        return len(set(grams)) / len(grams) if grams else 1.0

    def add(self, segments: list[str], minutes: float) -> None:
        self.minutes += minutes
        self.lines += len(segments)
        run, last = 0, None
        for text in segments:
            norm = normalise(text)
            run = run + 1 if norm == last else 1
            last = norm
            self.longest_same_run = max(self.longest_same_run, run)
            w = norm.split()
            self.words += w
            grams = [tuple(w[i : i + 3]) for i in range(len(w) - 2)]
            self.looping_segments += len(grams) != len(set(grams))

    def to_dict(self) -> dict:
        return {
            "lines": self.lines,
            "minutes": round(self.minutes, 2),
            "lines_per_minute": round(self.lines_per_minute, 1),
            "longest_same_run": self.longest_same_run,
            "looping_segments": self.looping_segments,
            "distinct_1": round(self.distinct(1), 3),
            "distinct_2": round(self.distinct(2), 3),
        }


# ---- long streams -------------------------------------------------------------------------------------


@dataclass
class LongResults:
    duration_s: int
    memory_frames: int | None
    max_context: int = 4096
    by_minute: dict[int, list[int]] = field(default_factory=dict)  # minute -> [asked, right]
    results: Results = field(default_factory=Results)
    talk: Repetition = field(default_factory=Repetition)
    compactions: int = 0

    def accuracy(self, from_minute: int = 0) -> tuple[int, int]:
        n = sum(v[0] for m, v in self.by_minute.items() if m >= from_minute)
        ok = sum(v[1] for m, v in self.by_minute.items() if m >= from_minute)
        return ok, n


def evaluate_long(
    ckpt,
    seeds,
    duration_s: int,
    system_prompt: str,
    memory_frames: int | None = 64,
    tokens_per_frame=None,
    max_context: int = 4096,
) -> LongResults:
    from engine.data.synth import SynthConfig, long_world_record
    from engine.eval.harness import frames_of
    from engine.train.small import HELD_OUT, SYNTH_TOKENS_PER_SECOND

    out = LongResults(duration_s, memory_frames, max_context)
    cfg = SynthConfig(tokens_per_second=SYNTH_TOKENS_PER_SECOND)
    for seed in seeds:
        assert seed in HELD_OUT, f"seed {seed} is not held out"
        rec = long_world_record(seed, duration_s, 60.0, cfg=cfg)
        if rec is None:
            continue
        counter = {}

        def hook(dec, meta, counter=counter):
            counter["dec"] = dec

        frames = frames_of(rec, ckpt.cfg.vision.image_size)
        tr = replay(
            ckpt,
            rec,
            system_prompt,
            frames=frames,
            memory_frames=memory_frames,
            decoder_hook=hook,
            tokens_per_frame=tokens_per_frame,
            max_context=max_context,
        )
        out.compactions += counter["dec"].compactions
        score_record(rec["meta"], tr, out.results)
        for q in rec["meta"]["questions"]:
            right = answer_at_asking(q, tr)
            if right is None:
                continue
            minute = int(q["ask_frame"] / rec["meta"]["fps"] // 60)
            cell = out.by_minute.setdefault(minute, [0, 0])
            cell[0] += 1
            cell[1] += int(right)
        out.talk.add([s.text for s in tr.segments], rec["meta"]["n_frames"] / rec["meta"]["fps"] / 60)
    return out


# ---- video unlike the training world ----------------------------------------------------------------


def ood_frames(kind: str, seed: int, n: int, size: int = 256) -> np.ndarray:
    """n frames (size x size RGB) of a kind of video the training world never draws: 'camera' (a
    noisy, slowly panning blurred scene with sensor noise), 'screen' (windows and lines of text that
    scroll), 'texture' (natural-looking fractal texture, drifting)."""
    from engine.train.small import HELD_OUT

    assert seed in HELD_OUT, f"seed {seed} is not held out"
    rng = np.random.default_rng([seed, OOD_KINDS.index(kind), 97])
    out = np.zeros((n, size, size, 3), np.uint8)
    if kind == "camera":
        big = cv2.GaussianBlur(
            rng.integers(0, 255, (size * 2, size * 2, 3), dtype=np.uint8), (0, 0), size / 12
        )
        big = cv2.normalize(big, None, 0, 255, cv2.NORM_MINMAX)
        for i in range(n):
            x = int((size / 2) * (1 + math.sin(i / 17)))
            y = int((size / 2) * (1 + math.cos(i / 23)))
            frame = big[y : y + size, x : x + size].astype(np.int16)
            frame += rng.normal(0, 12, frame.shape).astype(np.int16)  # sensor noise
            out[i] = np.clip(frame, 0, 255)
    elif kind == "screen":
        words = "file edit view window help the report of total sales and notes for today meeting".split()
        lines = [" ".join(rng.choice(words, size=int(rng.integers(3, 8)))) for _ in range(200)]
        for i in range(n):
            img = np.full((size, size, 3), 245, np.uint8)
            cv2.rectangle(img, (0, 0), (size, 18), (60, 90, 160), -1)  # a title bar
            for j in range(12):
                text = lines[(i + j) % len(lines)]
                cv2.putText(img, text, (6, 36 + 18 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (20, 20, 20), 1)
            cv2.rectangle(img, (size // 2, size // 2), (size - 8, size - 8), (200, 200, 200), 1)  # a dialog
            out[i] = img
    elif kind == "texture":
        octaves = [
            cv2.resize(rng.random((4 * 2**k, 4 * 2**k, 3)).astype(np.float32), (size * 2, size * 2))
            for k in range(5)
        ]
        tex = sum(o / 2**k for k, o in enumerate(octaves))
        tex = cv2.normalize(tex, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        tex = cv2.cvtColor(
            cv2.cvtColor(tex, cv2.COLOR_RGB2HSV) // np.array([1, 2, 1], np.uint8), cv2.COLOR_HSV2RGB
        )
        for i in range(n):
            d = i % size
            out[i] = tex[d : d + size, d // 2 : d // 2 + size]
    else:
        raise ValueError(f"OOD kind must be one of {OOD_KINDS}")
    return out


def evaluate_ood(
    ckpt, seeds, duration_s: int, system_prompt: str, tokens_per_frame=None, videos=()
) -> dict[str, Repetition]:
    """Nobody asks anything: what the model says, unasked, on each kind of unfamiliar video, and on
    each of `videos` (files: real camera or screen recordings, up to duration_s at 1 fps)."""
    from engine.eval.harness import read_video_frames

    streams = {kind: [ood_frames(kind, seed, duration_s) for seed in seeds] for kind in OOD_KINDS}
    for path in videos:
        streams[Path(path).name] = [
            np.stack(read_video_frames(Path(path), float(duration_s), 1.0, duration_s))
        ]
    out = {}
    for kind, videos_of_kind in streams.items():
        r = Repetition()
        for frames in videos_of_kind:
            n = len(frames)
            rec = {"meta": {"n_frames": n, "fps": 1.0, "tokens_per_second": 150.0, "questions": []}}
            tr = replay(
                ckpt, rec, system_prompt, frames=frames, memory_frames=64, tokens_per_frame=tokens_per_frame
            )
            r.add([s.text for s in tr.segments], n / 60)
        out[kind] = r
    return out

"""Laying speech out between frames: a real-time record in the MOSS format (`<|silence|><|video|>`
per frame, answers packed at the runtime's decode speed, questions barging in mid-answer), and the
checks every such record must pass. Used by `engine.data.synth`; knows nothing of worlds or models.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.protocol import REALTIME_SYSTEM_PROMPT, SILENCE, VIDEO

INFO_PREFIX = "[RealTime QA][INFO]"
PLACEHOLDER = "[RealTime QA][PLACEHOLDER]"


def estimate_tokens(text: str) -> int:
    """About 1.3 Llama-3 tokens per English word."""
    return math.ceil(1.3 * len(text.split()))


# ---------------------------------------------------------------------------------------------
# Layout of speech between frames


@dataclass(frozen=True)
class Ask:
    """A user question: arrives after frame `frame`, `frac` of the way to the next frame."""

    frame: int
    frac: float
    text: str
    answer: int | None = None  # index of the speech spoken right after the question, if any


@dataclass(frozen=True)
class Layout:
    """What `build_messages` did, for the ground truth."""

    frame_kind: tuple[str, ...]  # per frame: "silence", "speech" (a speech starts), "continue"
    spoken_frame: tuple[int | None, ...]  # per speech: interval where it started (None: never did)
    cut: tuple[bool, ...]  # per speech: interrupted by a question


def build_messages(
    n_frames: int,
    asks: Sequence[Ask],
    speeches: Sequence[tuple[int, str]],
    tokens_per_frame: float,
    count_tokens: Callable[[str], int] = estimate_tokens,
    system: str = REALTIME_SYSTEM_PROMPT,
) -> tuple[list[dict], Layout]:
    """Lay out frames, questions and speech as the reference records do.

    speeches: (frame, text): speak after that frame's <|video|>; queued behind speech in progress.
    A speech named by an Ask's `answer` is spoken right after that question instead.
    """
    if len({a.frame for a in asks}) != len(asks):
        raise ValueError("at most one question per frame interval")
    asks_at = {a.frame: a for a in asks}
    immediate = {a.answer for a in asks if a.answer is not None}
    due: dict[int, list[int]] = defaultdict(list)
    for i, (f, _) in enumerate(speeches):
        if i not in immediate:
            due[f].append(i)
    queue: deque[list] = deque()  # [speech index, remaining words]
    spoken: list[int | None] = [None] * len(speeches)
    cut = [False] * len(speeches)
    started: list[bool] = [False]

    def words(i: int) -> list[str]:
        return re.findall(r"\s*\S+", speeches[i][1].strip())

    def speak(budget: float, k: int, partial: bool) -> str:
        """Up to `budget` tokens from the queue. A frame lands between words; a question may land
        mid-word (partial). At least one word per interval, so speech always makes progress."""
        out = ""
        while queue:
            i, ws = queue[0]
            while ws:
                w = ws[0] if out or spoken[i] is not None else ws[0].lstrip()
                if out and spoken[i] is None:
                    w = " " + w.lstrip()  # a second speech in the same interval
                cand = out + w
                if count_tokens(cand) <= budget or (not out and not partial):
                    out = cand
                    ws.pop(0)
                    if spoken[i] is None:
                        spoken[i], started[0] = k, True
                    continue
                if partial and budget > count_tokens(out):
                    spare = (budget - count_tokens(out)) / max(1, count_tokens(cand) - count_tokens(out))
                    part = w[: int(len(w) * spare)]
                    if part.strip():
                        out += part
                        if spoken[i] is None:
                            spoken[i], started[0] = k, True
                return out
            queue.popleft()
        return out

    messages = [{"role": "system", "content": system}, {"role": "user", "content": ""}]
    turn = [SILENCE]  # silent before the first frame
    kinds = []
    for k in range(n_frames):
        turn.append(VIDEO)
        started[0] = False
        queue.extend([i, words(i)] for i in due.get(k, ()))
        budget, said = tokens_per_frame, ""
        a = asks_at.get(k)
        if a is not None:
            allow = max(1, round(a.frac * tokens_per_frame))
            said = speak(allow, k, partial=True)
            turn.append(said)
            for i, _ in queue:
                cut[i] = True
            if not (queue and said):  # finished, or asked before the first word: the turn ends silent
                turn.append(SILENCE)
            queue.clear()
            messages.append({"role": "assistant", "content": "".join(turn)})
            messages.append({"role": "user", "content": a.text})
            turn = []
            if a.answer is not None:
                queue.append([a.answer, words(a.answer)])
            budget = max(1, tokens_per_frame - allow)
        text = speak(budget, k, partial=False)
        turn.append(text)
        if not queue:
            turn.append(SILENCE)
        kinds.append("speech" if started[0] else "continue" if said or text else "silence")
    if queue:  # speech still running after the last frame: let it finish
        turn.append(speak(math.inf, n_frames - 1, partial=False))
        turn.append(SILENCE)
    messages.append({"role": "assistant", "content": "".join(turn)})
    return messages, Layout(tuple(kinds), tuple(spoken), tuple(cut))


def frame_pieces(record: dict) -> list[str]:
    """Per frame, what the assistant said in the interval after it (both sides of a question that
    landed there, concatenated). The piece before the first frame is dropped."""
    out: list[str] = []
    for m in record["messages"][2:]:
        if m["role"] != "assistant":
            continue
        parts = m["content"].split(VIDEO)
        if out:
            out[-1] += parts[0]
        out.extend(parts[1:])
    return out


def time_info(n_frames: int, fps: float) -> list[str]:
    return [f"{s // 60:02d}:{s % 60:02d}" for s in (int(k / fps + 1e-9) for k in range(n_frames))]


_MARKUP = re.compile(r"<\|[^|<>]*\|>")


def check_realtime_record(record: Any, system: str = REALTIME_SYSTEM_PROMPT) -> int:
    """Raise ValueError unless `record` has the reference real-time layout; return its frame count.

    Checked: system turn and empty first user turn; user/assistant alternation ending on the
    assistant; no markup but <|silence|> and <|video|> in assistant turns and none in user turns; every
    piece between frames is <|silence|>, text, or text + <|silence|>; speech that runs past a frame
    continues right after it; the stream opens and ends silent; the videos list matches the frames.
    """
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise ValueError("record: needs a 'messages' list")
    msgs, videos = record["messages"], record.get("videos")
    if len(msgs) < 3 or msgs[0] != {"role": "system", "content": system}:
        raise ValueError("messages[0]: must be the system turn with the real-time system prompt")
    if msgs[1].get("role") != "user" or msgs[1].get("content") != "":
        raise ValueError("messages[1]: must be an empty user turn")
    if len(msgs) % 2 == 0:
        raise ValueError("messages: must end with an assistant turn")
    n = 0
    for j, m in enumerate(msgs[1:], 1):
        role, content = m.get("role"), m.get("content")
        if role != ("user" if j % 2 else "assistant") or not isinstance(content, str):
            raise ValueError(f"messages[{j}]: roles must alternate user/assistant with string content")
        if role == "user":
            if j > 1 and (not content.strip() or _MARKUP.search(content)):
                raise ValueError(f"messages[{j}]: a question must be plain non-empty text")
            continue
        bad = set(_MARKUP.findall(content)) - {SILENCE, VIDEO}
        if bad:
            raise ValueError(f"messages[{j}]: unexpected markup {sorted(bad)}")
        pieces = content.split(VIDEO)
        if j == 2 and pieces[0] != SILENCE:
            raise ValueError("messages[2]: the stream must open with <|silence|> before the first frame")
        for i, p in enumerate(pieces):
            where = f"messages[{j}] piece {i}"
            text = p[: -len(SILENCE)] if p.endswith(SILENCE) else p
            if not p or SILENCE in text:
                raise ValueError(
                    f"{where}: must be <|silence|>, text, or text then <|silence|>; got {p[:60]!r}"
                )
            if i > 0 and not pieces[i - 1].endswith(SILENCE) and p.startswith(SILENCE):
                raise ValueError(f"{where}: speech that runs past a frame must continue after it")
        if j == len(msgs) - 1 and not content.endswith(SILENCE):
            raise ValueError(f"messages[{j}]: the last turn must end with <|silence|>")
        n += len(pieces) - 1
    if not isinstance(videos, list) or len(videos) != n:
        raise ValueError(f"videos: needs one entry per <|video|> ({n}), got {len(videos or [])}")
    if n == 0 or not isinstance(videos[0], str) or not videos[0].startswith(INFO_PREFIX):
        raise ValueError(f"videos[0]: must start with {INFO_PREFIX}")
    try:
        info = json.loads(videos[0][len(INFO_PREFIX) :])
    except json.JSONDecodeError as e:
        raise ValueError(f"videos[0]: the INFO part is not JSON ({e})") from None
    if not isinstance(info.get("video_path"), str) or not isinstance(info.get("time_info"), list):
        raise ValueError("videos[0]: INFO needs 'video_path' and 'time_info'")
    ti = info["time_info"]
    if len(ti) != n or not all(isinstance(x, str) and re.fullmatch(r"\d{2,}:\d{2}", x) for x in ti):
        raise ValueError(f"videos[0]: time_info needs {n} 'MM:SS' entries, got {len(ti)}")
    if any(v != PLACEHOLDER for v in videos[1:]):
        raise ValueError(f"videos[1:]: must all be {PLACEHOLDER}")
    if record.get("images", []) != []:
        raise ValueError("images: must be empty in a real-time record")
    return n

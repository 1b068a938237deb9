"""Dense captions: timestamped sentences about a video, from our world or from an external file.

Owns the wording of world events and states (one place, so questions, answers and captions agree:
"a small red circle", "at the top left"), and the loader of external dense-caption files. It knows
nothing of questions, records or the token protocol (synth.py), nor of pixels (world.py).

For a world video, `world_captions(video)` gives one caption per event (start == end == the event's
time) and one state line per whole second ("2 objects: a small red circle at the top left and a
large blue square in the center. The display shows 7.").

External dense captions (JSON), accepted in four shapes; times are seconds from the video's start:

1. One video:
       {"video": "clips/cooking.mp4", "duration": 82.7,
        "timestamps": [[0.0, 12.5], [10.1, 30.0]],
        "sentences": ["A man chops onions.", "He puts them in a pan."]}
   "video" is a path or an id; it becomes the record's video_path.
2. A list of objects of shape 1.
3. ActivityNet Captions (train.json, val_1.json): a dict of videos keyed by id, each
       {"v_QOlSCBRmfWY": {"duration": 82.73, "timestamps": [[0.83, 19.86], ...],
                          "sentences": ["A young woman ...", ...]}, ...}
   The key is the video id, unless the entry has its own "video".
4. YouCook2 (youcookii_annotations_*.json):
       {"database": {"GLGKnkEr9y4": {"duration": 241.6,
                     "annotations": [{"segment": [90, 102], "sentence": "spread margarine"}]}}}

Rules: duration > 0; every timestamp is [start, end] with 0 <= start <= end and start < duration;
an end past the duration is clipped to it (ActivityNet has such ends); as many sentences as
timestamps, each a non-empty string; segments may overlap. Captions are sorted by start time.
Anything else raises ValueError naming the file, the video and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.data.world import FrameState, ObjectState, Video, WorldEvent


@dataclass(frozen=True)
class Caption:
    """One timestamped sentence."""

    start: float  # seconds
    end: float  # seconds; == start for an instantaneous world event
    sentence: str
    kind: str = "caption"  # world event kind (enter, leave, ...) or "caption" for external text
    oids: tuple[int, ...] = ()  # world objects involved


@dataclass(frozen=True)
class DenseCaptions:
    """All captions of one video."""

    video: str  # path or id
    duration: float  # seconds
    captions: tuple[Caption, ...]  # sorted by start
    states: tuple[str, ...] = ()  # world videos: the state at each whole second; external: empty


# ---------------------------------------------------------------------------------------------
# Wording shared with synth.py


def position_name(x: float, y: float) -> str:
    """Screen region of a normalised point: "top left", "top", "left", "center", ... in thirds."""
    col = "left" if x < 1 / 3 else "right" if x > 2 / 3 else ""
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else ""
    if row and col:
        return f"{row} {col}"
    return row or col or "center"


def position_phrase(name: str) -> str:
    """ "top left" -> "at the top left", "left" -> "on the left", "center" -> "in the center"."""
    if name == "center":
        return "in the center"
    if name in ("left", "right"):
        return f"on the {name}"
    return f"at the {name}"


def object_phrase(o: ObjectState, size: bool = True) -> str:
    """ "small red circle" (no article)."""
    return f"{o.size} {o.colour} {o.shape}" if size else f"{o.colour} {o.shape}"


def with_article(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def join_list(items: list[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def sentence(text: str) -> str:
    """Capitalised, ending with punctuation."""
    text = " ".join(text.split())
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def listing(objects: tuple[ObjectState, ...]) -> list[str]:
    """Objects left to right as "a small red circle" phrases (a fixed order is easier to learn)."""
    return [with_article(object_phrase(o)) for o in sorted(objects, key=lambda o: (o.x, o.y))]


def describe_state(state: FrameState) -> str:
    objs = listing(state.objects)
    where = [
        f"{p} {position_phrase(position_name(o.x, o.y))}"
        for p, o in zip(objs, sorted(state.objects, key=lambda o: (o.x, o.y)), strict=True)
    ]
    n = len(objs)
    text = "No objects." if n == 0 else f"{n} object{'s' if n > 1 else ''}: {join_list(where)}."
    if state.display is not None:
        text += f" The display shows {state.display}."
    return text


def _the(o: ObjectState, others: tuple[ObjectState, ...]) -> str:
    """ "the red circle", with the size added if another object shares colour and shape."""
    twin = any(p.oid != o.oid and p.colour == o.colour and p.shape == o.shape for p in others)
    return "the " + object_phrase(o, size=twin)


def describe_event(ev: WorldEvent, video: Video) -> str:
    others = video.states[ev.frame].objects + (video.states[ev.frame - 1].objects if ev.frame > 0 else ())
    objs = ev.objects
    if ev.kind == "display":
        return f"The display shows {ev.value}."
    if ev.kind == "enter":
        return sentence(f"{with_article(object_phrase(objs[0]))} enters from the {ev.edge}")
    if ev.kind == "appear":
        return sentence(f"{with_article(object_phrase(objs[0]))} appears")
    if ev.kind == "collide":
        return sentence(f"{_the(objs[0], others)} and {_the(objs[1], others)} collide")
    what = {
        "leave": f"leaves to the {ev.edge}",
        "vanish": "disappears",
        "colour": f"changes colour to {ev.colour}",
        "stop": "stops",
        "start": "starts moving",
    }[ev.kind]
    return sentence(f"{_the(objs[0], others)} {what}")


def world_captions(video: Video) -> DenseCaptions:
    caps = tuple(Caption(ev.t, ev.t, describe_event(ev, video), ev.kind, ev.oids) for ev in video.events)
    n_seconds = int(math.ceil(video.n_frames / video.fps))
    states = tuple(describe_state(video.states[video.index_at(float(s))]) for s in range(n_seconds))
    return DenseCaptions(video.path, video.n_frames / video.fps, caps, states)


# ---------------------------------------------------------------------------------------------
# External captions


def load_captions(path: str | Path) -> list[DenseCaptions]:
    """Read an external dense-caption file (any shape of the module docstring)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return parse_captions(obj, str(path))


def parse_captions(obj: Any, source: str = "captions") -> list[DenseCaptions]:
    if isinstance(obj, list):
        return [_parse_video(x, f"{source}: item {i}", None) for i, x in enumerate(obj)]
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a JSON object or a list of objects, got {type(obj).__name__}")
    if isinstance(obj.get("database"), dict):  # YouCook2
        return [_parse_youcook(v, f"{source}: video {k!r}", k) for k, v in obj["database"].items()]
    if any(k in obj for k in ("timestamps", "sentences", "duration")):
        return [_parse_video(obj, source, None)]
    out = []
    for key, entry in obj.items():  # ActivityNet: dict of videos
        where = f"{source}: video {key!r}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be an object with 'duration', 'timestamps' and 'sentences'")
        out.append(_parse_video(entry, where, key))
    return out


def _parse_youcook(entry: Any, where: str, key: str) -> DenseCaptions:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be an object with 'duration' and 'annotations'")
    ann = entry.get("annotations")
    if not isinstance(ann, list):
        raise ValueError(f"{where}: field 'annotations' must be a list of {{'segment', 'sentence'}} objects")
    for i, a in enumerate(ann):
        if not isinstance(a, dict) or "segment" not in a or "sentence" not in a:
            raise ValueError(f"{where}: field 'annotations'[{i}] must have 'segment' and 'sentence'")
    flat = {
        "video": entry.get("video", key),
        "duration": entry.get("duration"),
        "timestamps": [a["segment"] for a in ann],
        "sentences": [a["sentence"] for a in ann],
    }
    return _parse_video(flat, where, key)


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _parse_video(d: Any, where: str, default_video: str | None) -> DenseCaptions:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: must be an object with 'video', 'duration', 'timestamps', 'sentences'")
    video = d.get("video", default_video)
    if not isinstance(video, str) or not video:
        raise ValueError(f"{where}: field 'video' must be a non-empty path or id")
    duration = d.get("duration")
    if not _number(duration) or duration <= 0:
        raise ValueError(f"{where}: field 'duration' must be a positive number of seconds, got {duration!r}")
    stamps, sents = d.get("timestamps"), d.get("sentences")
    if not isinstance(stamps, list):
        raise ValueError(f"{where}: field 'timestamps' must be a list of [start, end] pairs")
    if not isinstance(sents, list):
        raise ValueError(f"{where}: field 'sentences' must be a list of strings")
    if len(stamps) != len(sents):
        raise ValueError(
            f"{where}: fields 'timestamps' and 'sentences' differ in length ({len(stamps)} vs {len(sents)})"
        )
    caps = []
    for i, (ts, text) in enumerate(zip(stamps, sents, strict=True)):
        if not (isinstance(ts, list | tuple) and len(ts) == 2 and all(_number(x) for x in ts)):
            raise ValueError(f"{where}: field 'timestamps'[{i}] must be [start, end] in seconds, got {ts!r}")
        start, end = float(ts[0]), float(ts[1])
        if start < 0 or start > end:
            raise ValueError(f"{where}: field 'timestamps'[{i}] needs 0 <= start <= end, got {ts!r}")
        if start >= duration:
            raise ValueError(f"{where}: field 'timestamps'[{i}] starts at or after the duration {duration}")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: field 'sentences'[{i}] must be a non-empty string, got {text!r}")
        caps.append(Caption(start, min(end, float(duration)), " ".join(text.split())))
    caps.sort(key=lambda c: c.start)
    return DenseCaptions(video, float(duration), tuple(caps))

"""Question plans for procedural-world videos: for each kind of question (count, colour, display, list,
presence, position, watch, order, spatial, narrate), what to ask at a frame and what the model should
say, when, and when to revise it, computed from the simulated world's ground truth. Used by
`engine.data.synth`, which lays the plans out as records in the MOSS format. Knows nothing of tokens.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.data.captions import (
    describe_event,
    join_list,
    listing,
    object_phrase,
    position_name,
    position_phrase,
    sentence,
    with_article,
)
from engine.data.world import COLOURS, SHAPES, ObjectState, Video

# ---------------------------------------------------------------------------------------------
# Question plans for world videos


@dataclass(frozen=True)
class Speech:
    """Something the model should say under a question."""

    frame: int  # due after this frame
    text: str
    type: str  # answer, revision, watch, event
    value: Any = None
    accept: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """One question with everything it makes the model say."""

    kind: str
    text: str
    answer_frame: int | None
    speeches: tuple[Speech, ...]
    value: Any
    accept: tuple[str, ...]
    busy_until: int  # the next question should come after this frame
    valid_until: int  # the question's truth is defined up to this frame (records may end there)
    info: dict = field(default_factory=dict)
    ask_frame: int = -1
    ask_frac: float = 0.5


class _Scene:
    """Read-only look-ups over a world video's states."""

    def __init__(self, video: Video, p_arriving_decoy: float = 0.0):
        self.video, self.states, self.F = video, video.states, video.n_frames
        self.p_arriving_decoy = p_arriving_decoy
        self.first_seen: dict[int, int] = {}
        self.looks = [{(o.colour, o.shape) for o in st.objects} for st in self.states]
        for st in self.states:
            for o in st.objects:
                self.first_seen.setdefault(o.oid, st.index)

    def objs(self, f: int) -> tuple[ObjectState, ...]:
        return self.states[f].objects

    def match(self, f: int, **attrs: str) -> list[ObjectState]:
        return [o for o in self.objs(f) if all(getattr(o, k) == v for k, v in attrs.items())]

    def get(self, f: int, oid: int) -> ObjectState | None:
        return next((o for o in self.objs(f) if o.oid == oid), None)


def _pick(rng: np.random.Generator, items: Sequence) -> Any:
    return items[int(rng.integers(len(items)))]


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x")) else "s")


def _count_text(n: int, noun: str, now: bool) -> str:
    body = f"are no {_plural(noun)}" if n == 0 else f"is 1 {noun}" if n == 1 else f"are {n} {_plural(noun)}"
    return ("Now there " if now else "There ") + body + "."


def _revising(sc: _Scene, ans: int, until: int, value, say, say_again, accept) -> list[Speech]:
    """The answer at `ans`, then a revision on every frame up to `until` where the value changes."""
    out = [Speech(ans, say(value(ans)), "answer", value(ans), accept(value(ans)))]
    for f in range(ans + 1, until + 1):
        v = value(f)
        if v != value(f - 1):
            out.append(Speech(f, say_again(v), "revision", v, accept(v)))
    return out


def _plan_count(sc: _Scene, a: int, ans: int, rng) -> Plan | None:
    mode, flt, noun = _pick(rng, ["all", "all", "all", "colour", "shape"]), {}, "object"
    vis = sc.objs(ans)
    if mode == "colour":
        c = _pick(rng, sorted({o.colour for o in vis}) if vis and rng.random() < 0.7 else list(COLOURS))
        flt, noun = {"colour": c}, f"{c} object"
    elif mode == "shape":
        s = _pick(rng, sorted({o.shape for o in vis}) if vis and rng.random() < 0.7 else list(SHAPES))
        flt, noun = {"shape": s}, s
    p = _plural(noun)
    q = _pick(
        rng, [f"How many {p} are there?", f"How many {p} can you see?", f"Count the {p} on the screen."]
    )

    def value(f):
        return len(sc.match(f, **flt))

    def accept(n):
        return ("no",) if n == 0 else (str(n),)

    sp = _revising(
        sc,
        ans,
        sc.F - 1,
        value,
        lambda n: _count_text(n, noun, False),
        lambda n: _count_text(n, noun, True),
        accept,
    )
    return Plan("count", q, ans, tuple(sp), value(ans), accept(value(ans)), ans, sc.F - 1, {"filter": flt})


def _plan_colour(sc: _Scene, a: int, ans: int, rng) -> Plan | None:
    cands = []
    for o in sc.objs(ans):
        for ref in ({"shape": o.shape}, {"size": o.size, "shape": o.shape}):
            if [p.oid for p in sc.match(ans, **ref)] == [o.oid] == [p.oid for p in sc.match(a, **ref)]:
                cands.append((o, ref))
                break
    if not cands:
        return None
    o, ref = _pick(rng, cands)
    name = " ".join(ref.values())

    def colour(f):
        m = sc.match(f, **ref)
        return m[0].colour if len(m) == 1 and m[0].oid == o.oid else None

    valid = ans
    while valid + 1 < sc.F and colour(valid + 1) is not None:
        valid += 1
    q = _pick(
        rng,
        [f"What colour is the {name}?", f"What is the colour of the {name}?", f"Which colour is the {name}?"],
    )
    sp = _revising(
        sc,
        ans,
        valid,
        colour,
        lambda c: f"The {name} is {c}.",
        lambda c: f"Now the {name} is {c}.",
        lambda c: (c,),
    )
    return Plan("colour", q, ans, tuple(sp), o.colour, (o.colour,), ans, valid, {"oid": o.oid, "ref": name})


def _plan_display(sc: _Scene, a: int, ans: int, rng) -> Plan | None:
    if sc.video.display is None:
        return None

    def value(f):
        return sc.states[f].display

    q = _pick(rng, ["What number does the display show?", "What does the display read?", "Read the display."])
    sp = _revising(
        sc,
        ans,
        sc.F - 1,
        value,
        lambda v: f"The display shows {v}.",
        lambda v: f"Now the display shows {v}.",
        lambda v: (str(v),),
    )
    return Plan("display", q, ans, tuple(sp), value(ans), (str(value(ans)),), ans, sc.F - 1)


def _plan_list(sc: _Scene, a: int, ans: int, rng) -> Plan | None:
    objs = sc.objs(ans)
    items = listing(objs)
    value = [object_phrase(o) for o in sorted(objs, key=lambda o: (o.x, o.y))]
    text = f"I see {join_list(items)}." if items else "I see no objects."
    accept = tuple(value) or ("no",)
    q = _pick(rng, ["What do you see?", "What objects are on the screen?", "Describe the objects you see."])
    return Plan("list", q, ans, (Speech(ans, text, "answer", value, accept),), value, accept, ans, sc.F - 1)


def _plan_presence(sc: _Scene, a: int, ans: int, rng) -> Plan | None:
    seen = sc.looks[a] | sc.looks[ans]
    both = sorted(sc.looks[a] & sc.looks[ans])
    if both and rng.random() < 0.5:
        (c, s), present = _pick(rng, both), True
    else:  # absent, preferably sharing a colour or a shape with something on screen (a decoy)
        decoys = [(c2, s) for c, s in seen for c2 in COLOURS] + [(c, s2) for c, s in seen for s2 in SHAPES]
        absent = sorted({look for look in decoys if look not in seen})
        if not absent:
            absent = sorted({(c, s) for c in COLOURS for s in SHAPES} - seen)
        (c, s), present = _pick(rng, absent), False
    name = f"{c} {s}"
    q = _pick(rng, [f"Is there {with_article(name)}?", f"Do you see {with_article(name)}?"])
    text = f"Yes, there is {with_article(name)}." if present else f"No, there is no {name}."
    accept = ("yes",) if present else ("no",)
    sp = (Speech(ans, text, "answer", present, accept),)
    return Plan("presence", q, ans, sp, present, accept, ans, sc.F - 1, {"colour": c, "shape": s})


def _steady(v: float) -> bool:
    return min(abs(v - 1 / 3), abs(v - 2 / 3)) > 0.05  # far enough from a region border to be unambiguous


def _plan_position(sc: _Scene, a: int, ans: int, rng) -> Plan | None:
    cands = []
    for o in sc.objs(ans):
        p = sc.get(a, o.oid)
        if p is None or p.colour != o.colour or position_name(p.x, p.y) != position_name(o.x, o.y):
            continue
        if all(_steady(v) for v in (o.x, o.y, p.x, p.y)):
            cands.append(o)
    if not cands:
        return None
    o = _pick(rng, cands)
    name, region = f"{o.colour} {o.shape}", position_name(o.x, o.y)
    q = _pick(rng, [f"Where is the {name}?", f"Where is the {name} on the screen?"])
    sp = (Speech(ans, f"The {name} is {position_phrase(region)}.", "answer", region, (region,)),)
    return Plan("position", q, ans, sp, region, (region,), ans, sc.F - 1, {"oid": o.oid})


def _decoys(sc: _Scene, c: str, s: str, f0: int, f1: int) -> list[str]:
    """Objects in frames f0..f1 that share the colour or the shape of (c, s) but not both."""
    found = {(oc, os) for f in range(f0, f1 + 1) for oc, os in sc.looks[f] if (oc == c) != (os == s)}
    return sorted(f"{oc} {os}" for oc, os in found)


def _pick_watch(sc: _Scene, a: int, cands: list, rng, p_tricky: float) -> tuple | None:
    """One of the watch candidates (c, s, fe, decoys), None if there are none. With probability
    sc.p_arriving_decoy one whose decoy is not on screen when the question is asked (it arrives while
    the model waits); otherwise, with probability p_tricky, one with any decoy; otherwise any."""
    if sc.p_arriving_decoy > 0 and rng.random() < sc.p_arriving_decoy:
        asked = {f"{c} {s}" for c, s in sc.looks[a]}
        arriving = [x for x in cands if any(d not in asked for d in x[3])]
        if arriving:
            return _pick(rng, arriving)
    if not cands:
        return None
    tricky = [x for x in cands if x[3]]
    return _pick(rng, tricky if tricky and rng.random() < p_tricky else cands)


def _plan_watch(sc: _Scene, a: int, ans: int, rng) -> Plan | None:
    looks = [(c, s) for c in COLOURS for s in SHAPES]
    comes = rng.random() < 0.7
    if comes:
        cands = []
        for c, s in looks:
            if (c, s) in sc.looks[a]:
                continue
            fe = next((f for f in range(a + 1, min(sc.F, a + 16)) if (c, s) in sc.looks[f]), None)
            if fe is not None:
                cands.append((c, s, fe, _decoys(sc, c, s, a, fe)))
        pick = _pick_watch(sc, a, cands, rng, p_tricky=0.8)
        comes = pick is not None
    if not comes:
        cands = [(c, s) for c, s in looks if not any((c, s) in sc.looks[f] for f in range(a, sc.F))]
        cands = [(c, s, None, _decoys(sc, c, s, a, sc.F - 1)) for c, s in cands]
        pick = _pick_watch(sc, a, cands, rng, p_tricky=0.9)
    c, s, fe, decoys = pick
    name = f"{c} {s}"
    art = with_article(name)
    q = _pick(
        rng, [f"Tell me when {art} appears.", f"Let me know when you see {art}.", f"Say when {art} shows up."]
    )
    sp = (Speech(fe, sentence(f"{art} appeared"), "watch", True, (name,)),) if comes else ()
    info = {"colour": c, "shape": s, "comes": comes, "event_frame": fe, "decoys": decoys}
    return Plan("watch", q, None, sp, fe, (), fe if comes else sc.F - 1, sc.F - 1, info)


def _plan_order(sc: _Scene, a: int, ans: int, rng) -> Plan | None:
    colours: dict[int, set[str]] = defaultdict(set)
    owners: dict[tuple[str, str], set[int]] = defaultdict(set)
    shape = {}
    for f in range(a + 1):
        for o in sc.objs(f):
            colours[o.oid].add(o.colour)
            owners[(o.colour, o.shape)].add(o.oid)
            shape[o.oid] = o.shape
    ok = [i for i in colours if len(colours[i]) == 1 and owners[(next(iter(colours[i])), shape[i])] == {i}]
    pairs = [(i, j) for i in ok for j in ok if sc.first_seen[i] < sc.first_seen[j]]
    if not pairs:
        return None
    i, j = _pick(rng, pairs)
    first, second = (f"{next(iter(colours[k]))} {shape[k]}" for k in (i, j))
    x, y = (first, second) if rng.random() < 0.5 else (second, first)
    q = _pick(rng, [f"Which appeared first, the {x} or the {y}?", f"Which came first: the {x} or the {y}?"])
    sp = (Speech(ans, f"The {first} appeared first.", "answer", first, (first,)),)
    return Plan("order", q, ans, sp, first, (first,), ans, sc.F - 1, {"oids": [i, j]})


_RELATIONS = {"left of": ("x", -1), "right of": ("x", 1), "above": ("y", -1), "below": ("y", 1)}
_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def _plan_spatial(sc: _Scene, a: int, ans: int, rng) -> Plan | None:
    cands = []
    for p in sc.objs(ans):
        for q in sc.objs(ans):
            p0, q0 = sc.get(a, p.oid), sc.get(a, q.oid)
            if p.oid == q.oid or p0 is None or q0 is None or (p0.colour, q0.colour) != (p.colour, q.colour):
                continue
            for axis in ("x", "y"):
                d1, d0 = getattr(p, axis) - getattr(q, axis), getattr(p0, axis) - getattr(q0, axis)
                if abs(d1) >= 0.15 and abs(d0) >= 0.15 and d1 * d0 > 0:
                    cands.append((p, q, axis, 1 if d1 > 0 else -1))
    if not cands:
        return None
    p, q, axis, sign = _pick(rng, cands)
    rel = _pick(rng, [r for r, (ax, _) in _RELATIONS.items() if ax == axis])
    truth = _RELATIONS[rel][1] == sign
    pn, qn = f"{p.colour} {p.shape}", f"{q.colour} {q.shape}"
    text = f"Yes, the {pn} is {rel} the {qn}." if truth else f"No, the {pn} is {_OPPOSITE[rel]} the {qn}."
    accept = ("yes",) if truth else ("no",)
    sp = (Speech(ans, text, "answer", truth, accept),)
    return Plan("spatial", f"Is the {pn} {rel} the {qn}?", ans, sp, truth, accept, ans, sc.F - 1)


def _plan_narrate(sc: _Scene, a: int, ans: int, rng) -> Plan | None:
    by_frame: dict[int, list[str]] = defaultdict(list)
    for ev in sc.video.events:
        if ev.frame > a:
            by_frame[ev.frame].append(describe_event(ev, sc.video))
    if not by_frame:
        return None
    sp = tuple(Speech(f, " ".join(t), "event", len(t)) for f, t in sorted(by_frame.items()))
    q = _pick(rng, ["Tell me what happens.", "Describe any changes you see.", "Tell me about every change."])
    return Plan("narrate", q, None, sp, None, (), min(sc.F - 1, a + 6), sc.F - 1)


PLANNERS: dict[str, Callable[[_Scene, int, int, np.random.Generator], Plan | None]] = {
    "count": _plan_count,
    "colour": _plan_colour,
    "display": _plan_display,
    "list": _plan_list,
    "presence": _plan_presence,
    "position": _plan_position,
    "watch": _plan_watch,
    "order": _plan_order,
    "spatial": _plan_spatial,
    "narrate": _plan_narrate,
}

"""Property fuzzing of the protocol layer: tokeniser input, event parsing, transcripts.

The properties and strategies live here once; tests/reliability/test_fuzz.py runs them with few
examples (CI), `python -m engine.bench fuzz --examples 5000` with many and prints the counts.
Needs hypothesis (a development dependency). It knows nothing of the app: the app's settings file
is fuzzed with the `yaml_like` strategy from here by tests/reliability/test_fuzz.py.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
import typing
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import events as E
from engine import protocol as P
from engine.tokenizer import PROTOCOL_TOKENS

NAMES = [*PROTOCOL_TOKENS, "<|reserved_special_token_3|>", "<|", "|>", "<|eot_id", "eot_id|>"]

# text with protocol names, their pieces and arbitrary unicode mixed in
texts = st.lists(st.one_of(st.text(max_size=40), st.sampled_from(NAMES)), max_size=8).map("".join)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def _field_strategy(tp) -> st.SearchStrategy:
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(-(2**40), 2**40)
    if tp is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if tp is str:
        return st.text(max_size=30)
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return st.one_of(*(_field_strategy(a) for a in typing.get_args(tp)))
    if tp is type(None):
        return st.none()
    raise TypeError(tp)


def _event_strategy(cls) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: _field_strategy(hints[f.name]) for f in dataclasses.fields(cls)})


events = st.one_of(*(_event_strategy(c) for c in E.EVENT_TYPES.values()))

# event-shaped dicts: a real kind, real and made-up field names, values of any JSON type
event_dicts = st.builds(
    lambda kind, fields: {**fields, "kind": kind},
    st.one_of(st.sampled_from(sorted(E.EVENT_TYPES)), json_values),
    st.dictionaries(
        st.one_of(
            st.sampled_from(["t", "turn", "text", "segment", "message", "index", "source_t"]),
            st.text(max_size=8),
        ),
        json_values,
        max_size=6,
    ),
)

SETTING_NAMES = ["fps", "model", "device", "memory_frames", "screen_region", "theme", "voice", "font_size"]
yaml_like = st.lists(
    st.one_of(
        st.builds(
            lambda k, v: f"{k}: {v}",
            st.one_of(st.sampled_from(SETTING_NAMES), st.text(max_size=8)),
            st.one_of(
                st.text(max_size=20),
                st.sampled_from(
                    [
                        "[1, 2",
                        "'x",
                        '"',
                        "{a: [",
                        "!!python/object:os.system",
                        "&a",
                        "*a",
                        "- x",
                        "null",
                        "1e999",
                        "-1",
                        "[0, 0, 0, 0]",
                    ]
                ),
            ),
        ),
        st.text(max_size=30),
    ),
    max_size=8,
).map("\n".join)


# ---- properties (each raises AssertionError when broken) ---------------------------------------


def literal_text_is_never_control(tok, text: str) -> None:
    ids = tok.encode(text)
    assert not any(tok.is_special(i) for i in ids), (text, ids)
    assert tok.decode(ids) == text


def question_adds_only_protocol_control_tokens(tok, text: str) -> None:
    ids = tok.encode_parts(P.question_parts(text))
    control = [i for i in ids if tok.is_special(i)]
    assert control == [i for i in tok.encode_parts(P.question_parts("")) if tok.is_special(i)]


def from_dict_raises_only_value_error(obj) -> None:
    try:
        ev = E.from_dict(obj)
    except ValueError:
        return
    assert isinstance(ev, E.Event)


def event_round_trips(ev: E.Event) -> None:
    back = E.from_dict(json.loads(json.dumps(ev.to_dict())))
    assert back == ev and type(back) is type(ev)


def transcript_reader_raises_only_value_error(folder: Path, events_: list, cut: int, tail: bytes) -> None:
    from engine.transcript import load_transcript

    path = folder / "t.jsonl"
    body = b"".join(json.dumps(e.to_dict()).encode() + b"\n" for e in events_)
    path.write_bytes(body[: max(0, len(body) - cut)] + tail)
    try:
        tr = load_transcript(path)
    except ValueError:
        return
    assert all(isinstance(e, E.Event) for e in tr.events)


# ---- running them ------------------------------------------------------------------------------


def properties(tok, folder: Path) -> dict[str, typing.Callable]:
    """name -> a zero-argument hypothesis test (call it to run; it raises on a counterexample)."""
    return {
        "tokenizer literal text": given(texts)(lambda t: literal_text_is_never_control(tok, t)),
        "question control tokens": given(texts)(lambda t: question_adds_only_protocol_control_tokens(tok, t)),
        "events.from_dict on JSON": given(st.one_of(json_values, event_dicts))(
            from_dict_raises_only_value_error
        ),
        "event round trip": given(events)(event_round_trips),
        "transcript bytes": given(st.lists(events, max_size=4), st.integers(0, 200), st.binary(max_size=64))(
            lambda ev, cut, tail: transcript_reader_raises_only_value_error(folder, ev, cut, tail)
        ),
    }


def run_all(examples: int, tok=None) -> dict[str, tuple[int, float]]:
    """Run every property with `examples` examples; name -> (examples run, seconds)."""
    if tok is None:
        from engine.bundled import load_default_checkpoint

        tok = load_default_checkpoint().tokenizer
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name, prop in properties(tok, Path(d)).items():
            count = [0]
            inner = prop.hypothesis.inner_test

            def counted(*a, _inner=inner, _count=count, **k):
                _count[0] += 1
                return _inner(*a, **k)

            prop.hypothesis.inner_test = counted
            t0 = time.perf_counter()
            settings(
                max_examples=examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )(prop)()
            out[name] = (count[0], time.perf_counter() - t0)
    return out


def add_args(p) -> None:
    p.add_argument("--examples", type=int, default=5000, help="examples per property")


def run(args) -> int:
    results = run_all(args.examples)
    print(f"{'property':<28} {'examples':>9} {'seconds':>8}  result")
    for name, (n, s) in results.items():
        print(f"{name:<28} {n:>9} {s:>8.1f}  PASS")
    return 0

"""The procedural world: deterministic, renderable at any size, and its state, pixels and captions agree."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.data.captions import describe_state, position_name, world_captions
from engine.data.render import write_video
from engine.data.world import COLOURS, SIZES, WorldConfig, make_video

SEEDS = range(40)


@pytest.fixture(scope="module")
def videos():
    return [make_video(s) for s in SEEDS]


def test_same_seed_same_video_and_pixels():
    a, b = make_video(11), make_video(11)
    assert a.states == b.states and a.events == b.events
    assert np.array_equal(a.frames((48, 48)), b.frames((48, 48)))
    c = make_video(12)
    assert c.states != a.states


def test_duration_override_keeps_the_rest_of_the_stream():
    """frames_for_record rebuilds a video from (seed, duration): the override must not shift the RNG."""
    v = make_video(5)
    w = make_video(5, duration_s=v.duration_s)
    assert v.states == w.states
    short = make_video(5, duration_s=10)
    assert short.n_frames == 10 and short.states[:10] == v.states[:10]


def test_a_video_planned_then_rendered_is_simulated_once():
    """A training sample asks for its video twice (to plan the questions, then to render the frames
    from the record's seed and duration): the second call gets the same simulated video, not a new one."""
    from engine.data.world import _simulate

    _simulate.cache_clear()
    v = make_video(7)
    assert make_video(7, duration_s=v.duration_s) is v
    assert _simulate.cache_info().misses == 1
    assert make_video(7, duration_s=v.duration_s - 1) is not v  # another duration, another video


@pytest.mark.parametrize("size", [(64, 64), (224, 224), (560, 560), (720, 1280), 96])
def test_renders_at_any_size(size):
    v = make_video(3)
    img = v.render(4, size)
    h, w = (size, size) if isinstance(size, int) else size
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    assert img.std() > 3  # texture and noise, not a flat frame


def test_float_time_selects_the_frame():
    v = make_video(3, config=WorldConfig(fps=2.0))
    assert np.array_equal(v.render(2.0, 32), v.render(4, 32))


def test_durations_and_object_counts_are_bounded(videos):
    for v in videos:
        assert 16 <= v.duration_s <= 40 and v.n_frames == v.duration_s
        for st in v.states:
            assert len(st.objects) <= 4
            assert all(0 <= o.x <= 1 and 0 <= o.y <= 1 for o in st.objects)
            looks = [(o.colour, o.shape) for o in st.objects]
            assert len(looks) == len(set(looks)), "colour + shape must name one object"


def test_events_agree_with_states(videos):
    seen = set()
    for v in videos:
        ids = [{o.oid: o for o in st.objects} for st in v.states]
        for ev in v.events:
            f, oid = ev.frame, ev.oids[0] if ev.oids else None
            seen.add(ev.kind)
            if ev.kind in ("enter", "appear"):
                assert oid in ids[f] and oid not in ids[f - 1]
                assert all(oid not in ids[g] for g in range(f))
            if ev.kind == "enter":
                o = ids[f][oid]
                near = {"left": o.x, "right": 1 - o.x, "top": o.y, "bottom": 1 - o.y}[ev.edge]
                assert near < 0.2
            if ev.kind in ("leave", "vanish"):
                assert oid in ids[f - 1] and oid not in ids[f]
            if ev.kind == "colour":
                assert ids[f - 1][oid].colour == ev.old_colour and ids[f][oid].colour == ev.colour
            if ev.kind == "stop":
                assert not ids[f][oid].moving and ids[f - 1][oid].moving
            if ev.kind == "display":
                assert v.states[f].display == ev.value != v.states[f - 1].display
            if ev.kind in ("enter", "appear", "vanish", "colour", "stop", "start", "display"):
                assert ev.t == int(ev.t), "scripted events happen on whole seconds"
        # every change of the on-screen set is explained by an event
        for f in range(1, v.n_frames):
            arrived = set(ids[f]) - set(ids[f - 1])
            left = set(ids[f - 1]) - set(ids[f])
            kinds = {(e.kind, e.oids[0]) for e in v.events if e.frame == f and e.oids}
            assert all(("enter", i) in kinds or ("appear", i) in kinds for i in arrived)
            assert all(("leave", i) in kinds or ("vanish", i) in kinds for i in left)
    assert seen >= {"enter", "appear", "leave", "vanish", "collide", "colour", "stop", "display"}


def test_drawn_objects_match_the_state(videos):
    """Each listed object is drawn in its colour at its position; empty frames show no palette colour."""
    checked = 0
    for v in videos[:15]:
        for i in range(0, v.n_frames, 3):
            st = v.states[i]
            img = v.render(i, (160, 160)).astype(int)
            dx, dy = np.round(v.jitter[i] * 160).astype(int)
            for o in st.objects:
                others = [p for p in st.objects if p.oid > o.oid]  # drawn later, may cover it
                if any(np.hypot(p.x - o.x, p.y - o.y) < SIZES[p.size] + 0.01 for p in others):
                    continue
                if v.display is not None:
                    x0, y0, x1, y1 = v.display.box
                    if x0 - 0.02 < o.x < x1 + 0.02 and y0 - 0.02 < o.y < y1 + 0.02:
                        continue
                cx, cy = int(o.x * 160) + dx, int(o.y * 160) + dy
                if o.shape == "triangle":
                    cy += 4  # the triangle's centroid sits below its bounding-box centre
                if not (2 <= cx < 158 and 2 <= cy < 158):
                    continue  # half outside the frame (entering, or pushed to the edge)
                patch = img[max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2].reshape(-1, 3).mean(0)
                assert np.abs(patch - COLOURS[o.colour]).max() < 40, (v.seed, i, o)
                checked += 1
    assert checked > 200


def test_empty_frames_show_no_object_colours(videos):
    saturated = np.array([c for n, c in COLOURS.items() if n not in ("white", "black")])
    empty = 0
    for v in videos:
        for i, st in enumerate(v.states):
            if st.objects:
                continue
            img = v.render(i, (96, 96)).astype(int)
            if v.display is not None:  # the LEDs may be red or green
                x0, y0, x1, y1 = v.display.box
                img[
                    max(0, int(y0 * 96) - 3) : int(y1 * 96) + 3, max(0, int(x0 * 96) - 3) : int(x1 * 96) + 3
                ] = 128
            dist = np.abs(img[:, :, None, :] - saturated[None, None]).max(-1).min(-1)
            assert (dist < 30).sum() == 0, (v.seed, i)
            empty += 1
    assert empty > 0


def test_state_and_event_captions(videos):
    v = videos[0]
    dc = world_captions(v)
    assert len(dc.captions) == len(v.events) and len(dc.states) == v.n_frames
    for cap, ev in zip(dc.captions, v.events, strict=True):
        assert cap.start == ev.t and cap.kind == ev.kind and cap.sentence.endswith(".")
    st = v.states[5]
    text = describe_state(st)
    n = len(st.objects)
    assert text.startswith("No objects." if n == 0 else f"{n} object")
    for o in st.objects:
        assert f"{o.size} {o.colour} {o.shape}" in text
    if st.display is not None:
        assert f"The display shows {st.display}." in text


def test_event_sentences_name_the_objects(videos):
    for v in videos[:10]:
        for cap, ev in zip(world_captions(v).captions, v.events, strict=True):
            if ev.kind == "enter":
                o = ev.objects[0]
                assert f"{o.size} {o.colour} {o.shape} enters from the {ev.edge}" in cap.sentence
            if ev.kind == "colour":
                assert cap.sentence.endswith(f"changes colour to {ev.colour}.")
            if ev.kind == "display":
                assert cap.sentence == f"The display shows {ev.value}."


def test_position_names():
    assert position_name(0.1, 0.1) == "top left"
    assert position_name(0.5, 0.5) == "center"
    assert position_name(0.9, 0.5) == "right"
    assert position_name(0.5, 0.9) == "bottom"


def test_write_video_round_trip(tmp_path):
    v = make_video(2, duration_s=5)
    path = tmp_path / "w.mp4"
    write_video(v, str(path), (64, 96))
    cap = cv2.VideoCapture(str(path))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (64, 96, 3)
        n += 1
    assert n == 5

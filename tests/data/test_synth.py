"""Records: the reference layout (checked on the real MOSS data too), timing of answers, watch requests
and revisions, external captions, and the command line."""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from engine.data import synth
from engine.data.captions import load_captions, parse_captions
from engine.data.layout import (
    INFO_PREFIX,
    PLACEHOLDER,
    Ask,
    build_messages,
    check_realtime_record,
    frame_pieces,
)
from engine.data.synth import (
    SynthConfig,
    caption_offline_record,
    caption_record,
    frames_for_record,
    main,
    world_offline_record,
    world_record,
)
from engine.data.world import make_video
from engine.protocol import REALTIME_SYSTEM_PROMPT, SILENCE, VIDEO
from tests.paths import MOSS_DEMO

ROOT = Path(__file__).resolve().parents[2]
DEMO = MOSS_DEMO
LONG = " ".join(f"word{i}" for i in range(60))


def _load(name: str):
    return json.loads((DEMO / name).read_text())


def _record(seed: int, **cfg) -> dict:
    rec = world_record(make_video(seed), np.random.default_rng([seed, 0, 1]), SynthConfig(**cfg))
    assert rec is not None
    return rec


def _only(kind: str, **cfg) -> SynthConfig:
    return SynthConfig(kinds=((kind, 1.0),), **cfg)


def _silent(piece: str) -> bool:
    return piece.replace(SILENCE, "") == ""


# ---------------------------------------------------------------------------------------------
# Layout


def test_checker_accepts_every_reference_record():
    records = _load("mllm_realtime_sft_demo.json")
    assert len(records) == 100
    for rec in records:
        n = check_realtime_record(rec)
        assert n == len(rec["videos"]) == len(frame_pieces(rec))


def _mutations():
    def drop_placeholder(r):
        r["videos"].pop()

    def system(r):
        r["messages"][0]["content"] += " "

    def first_user(r):
        r["messages"][1]["content"] = "hi"

    def double_frame(r):
        r["messages"][2]["content"] = VIDEO + r["messages"][2]["content"]

    def ends_on_frame(r):
        r["messages"][-1]["content"] += VIDEO
        r["videos"].append(PLACEHOLDER)

    def silence_mid_speech(r):
        r["messages"][4]["content"] = r["messages"][4]["content"].replace(
            "red<|video|> and", "red<|video|><|silence|>"
        )

    def short_time_info(r):
        info = json.loads(r["videos"][0][len(INFO_PREFIX) :])
        info["time_info"].pop()
        r["videos"][0] = INFO_PREFIX + json.dumps(info)

    def stray_markup(r):
        r["messages"][4]["content"] = "<|image|>" + r["messages"][4]["content"]

    return [
        drop_placeholder, system, first_user, double_frame, ends_on_frame, silence_mid_speech, short_time_info,
        stray_markup,
    ]  # fmt: skip


@pytest.mark.parametrize("mutate", _mutations(), ids=lambda f: f.__name__)
def test_checker_rejects_broken_records(mutate):
    rec = copy.deepcopy(_load("mllm_realtime_sft_demo.json")[0])
    mutate(rec)
    with pytest.raises(ValueError):
        check_realtime_record(rec)


def test_world_records_match_the_reference_structure():
    ref = _load("mllm_realtime_sft_demo.json")[0]
    ref_info = json.loads(ref["videos"][0][len(INFO_PREFIX) :])
    for seed in range(30):
        rec = _record(seed)
        n = check_realtime_record(rec)
        assert set(rec) == set(ref) | {"meta"}
        assert rec["messages"][:2] == ref["messages"][:2]
        assert rec["messages"][0]["content"] == REALTIME_SYSTEM_PROMPT
        info = json.loads(rec["videos"][0][len(INFO_PREFIX) :])
        assert set(info) == set(ref_info)
        assert info["time_info"] == [f"00:{s:02d}" for s in range(n)]
        assert rec["meta"]["n_frames"] == n == sum(m["content"].count(VIDEO) for m in rec["messages"])
        first = rec["messages"][2]["content"]  # before the first question: nothing but silence
        assert first == (SILENCE + VIDEO) * first.count(VIDEO) + SILENCE
        for q, m in zip(rec["meta"]["questions"], rec["messages"][4::2], strict=True):
            if q["answer_frame"] is not None and q["answer_frame"] > q["ask_frame"]:
                assert m["content"].startswith(
                    SILENCE + VIDEO
                )  # wait for the next frame, as the reference does
        pieces = frame_pieces(rec)
        for f in rec["meta"]["silent_frames"]:
            assert _silent(pieces[f])


def test_long_speech_runs_past_frames_by_tokens_per_second():
    def first_piece(tpf: float) -> str:
        msgs, _ = build_messages(4, [], [(0, LONG)], tpf)
        return msgs[2]["content"].split(VIDEO)[1]

    at38 = first_piece(38)
    assert not at38.endswith(SILENCE) and len(at38.split()) == 29  # ceil(1.3 * 29) = 38
    msgs, _ = build_messages(4, [], [(0, LONG)], 38)
    nxt = msgs[2]["content"].split(VIDEO)[2]
    assert nxt.startswith(" word29")  # continues right after the frame, with its space, as the reference
    assert len(first_piece(10).split()) == 7
    fast = first_piece(200)
    assert fast == LONG + SILENCE  # the whole answer fits before the next frame


def test_caption_records_follow_tokens_per_second():
    dc = parse_captions({"video": "x.mp4", "duration": 10, "timestamps": [[0, 10]], "sentences": [LONG]})[0]
    for tps, words in ((38, 29), (19, 14)):
        rec = caption_record(dc, np.random.default_rng(0), SynthConfig(tokens_per_second=tps, p_immediate=0))
        check_realtime_record(rec)
        f = rec["meta"]["questions"][0]["answer_frame"]
        assert len(frame_pieces(rec)[f].replace(SILENCE, "").split()) == words


def test_question_cuts_speech_mid_word():
    msgs, layout = build_messages(4, [Ask(1, 0.13, "Stop?")], [(1, LONG)], 38)
    before = msgs[2]["content"]
    assert msgs[3] == {"role": "user", "content": "Stop?"}
    spoken = before.split(VIDEO)[-1]
    assert not spoken.endswith(SILENCE) and LONG.startswith(spoken) and not LONG.startswith(spoken + " ")
    assert layout.cut == (True,)
    rec = {
        "messages": msgs,
        "images": [],
        "videos": [INFO_PREFIX + json.dumps({"video_path": "v", "time_info": synth.time_info(4, 1.0)})]
        + [PLACEHOLDER] * 3,
    }
    check_realtime_record(rec)


def test_barge_in_records_cut_the_previous_answer():
    cuts = 0
    for seed in range(60):
        rec = _record(seed, p_barge_in=1.0, p_immediate=0.0)
        check_realtime_record(rec)
        cuts += sum(s["cut"] for q in rec["meta"]["questions"] for s in q["speech"])
    assert cuts > 0


# ---------------------------------------------------------------------------------------------
# Ground truth: answers, watch requests, revisions


def test_watch_requests_are_silent_until_the_event():
    comes = never = decoyed = 0
    for seed in range(40):
        video = make_video(seed)
        rec = world_record(video, np.random.default_rng([seed, 0, 1]), _only("watch", max_questions=1))
        check_realtime_record(rec)
        pieces = frame_pieces(rec)
        (q,) = rec["meta"]["questions"]
        info, a = q["info"], q["ask_frame"]
        name = f"{info['colour']} {info['shape']}"
        looks = [{(o.colour, o.shape) for o in st.objects} for st in video.states]
        target = (info["colour"], info["shape"])
        decoyed += bool(info["decoys"])
        if info["comes"]:
            fe = info["event_frame"]
            comes += 1
            assert target not in looks[a] and all(target not in looks[f] for f in range(a, fe))
            assert target in looks[fe]
            assert all(_silent(pieces[f]) for f in range(a, fe))
            assert pieces[fe].startswith(f"A {name} appeared") or pieces[fe].startswith(f"An {name} appeared")
            assert [s["frame"] for s in q["speech"]] == [fe]
        else:
            never += 1
            assert all(target not in looks[f] for f in range(a, video.n_frames))
            assert all(_silent(p) for p in pieces[a:]) and q["speech"] == []
    assert comes > 10 and never > 3 and decoyed > 20


def test_arriving_decoys_are_preferred_when_asked_for():
    """p_arriving_decoy=1: watch targets whose decoy (same colour or shape) is not on screen at the
    question but arrives while the model waits, far more often than by default."""

    def arriving(p: float) -> int:
        n = 0
        for seed in range(40):
            video = make_video(seed)
            cfg = _only("watch", max_questions=1, p_arriving_decoy=p)
            rec = world_record(video, np.random.default_rng([seed, 0, 1]), cfg)
            (q,) = rec["meta"]["questions"]
            asked = {f"{o.colour} {o.shape}" for o in video.states[q["ask_frame"]].objects}
            n += any(d not in asked for d in q["info"]["decoys"])
        return n

    default, preferred = arriving(0.0), arriving(1.0)
    assert preferred >= default + 8 and preferred >= 30, (default, preferred)


def test_count_answer_and_revisions_follow_the_state():
    revisions = 0
    for seed in range(30):
        video = make_video(seed)
        rec = world_record(video, np.random.default_rng([seed, 0, 1]), _only("count", max_questions=1))
        pieces = frame_pieces(rec)
        (q,) = rec["meta"]["questions"]
        flt = q["info"]["filter"]

        def count(f, flt=flt, video=video):
            return sum(all(getattr(o, k) == v for k, v in flt.items()) for o in video.states[f].objects)

        ans = q["answer_frame"]
        assert q["value"] == count(ans) and str(count(ans)) in pieces[ans] or "no" in pieces[ans]
        for f in range(ans + 1, q["last_frame"] + 1):
            if count(f) != count(f - 1):
                n = count(f)
                assert pieces[f].startswith("Now there"), (seed, f)
                assert re.search(rf"\b{n if n else 'no'}\b", pieces[f])
                revisions += 1
            else:
                assert _silent(pieces[f])
        expected = [s["frame"] for s in q["speech"] if s["type"] == "revision"]
        assert expected == [f for f in range(ans + 1, q["last_frame"] + 1) if count(f) != count(f - 1)]
    assert revisions > 10


@pytest.mark.parametrize("kind", ["display", "colour"])
def test_display_and_colour_answers_are_revised(kind):
    revised = 0
    for seed in range(60):
        video = make_video(seed)
        rec = world_record(video, np.random.default_rng([seed, 0, 1]), _only(kind, max_questions=1))
        if rec is None or rec["meta"]["questions"][0]["kind"] != kind:
            continue
        pieces = frame_pieces(rec)
        for s in rec["meta"]["questions"][0]["speech"]:
            st = video.states[s["frame"]]
            if kind == "display":
                assert s["value"] == st.display
            else:
                assert s["value"] in {o.colour for o in st.objects}
            assert s["text"] in "".join(pieces[s["frame"] : s["frame"] + 2]).replace(SILENCE, "")
            revised += s["type"] == "revision"
    assert revised > 3


def test_every_world_kind_is_asked_and_answers_match_accept():
    kinds = set()
    for seed in range(80):
        rec = _record(seed)
        pieces = frame_pieces(rec)
        for q in rec["meta"]["questions"]:
            kinds.add(q["kind"])
            for s in q["speech"]:
                if not s["cut"] and s["spoken_frame"] == s["frame"]:
                    assert (
                        s["text"] in "".join(pieces[s["frame"] : s["frame"] + 2]).replace(SILENCE, "")
                        or s["text"] in pieces[s["frame"]]
                    )
                for phrase in s["accept"]:
                    assert re.search(rf"\b{re.escape(phrase)}\b", s["text"], re.I)
    assert kinds == set(synth.PLANNERS)


def test_frames_for_record_renders_the_records_frames():
    rec = _record(4)
    frames = frames_for_record(rec, 32)
    n = rec["meta"]["n_frames"]
    assert frames.shape == (n, 32, 32, 3)
    assert np.array_equal(frames[-1], make_video(4).render(n - 1, 32))
    assert np.array_equal(synth.WorldFrames(32)(rec, 3), frames[:3])  # the loader's FrameProvider


def test_offline_records_match_the_reference_format():
    ref = _load("mllm_offline_sft_demo.json")[0]
    for seed in range(10):
        rec = world_offline_record(make_video(seed), np.random.default_rng(seed))
        assert set(rec) == set(ref) | {"meta"}
        assert [m["role"] for m in rec["messages"]] == [m["role"] for m in ref["messages"]]
        assert (
            rec["messages"][0]["content"].startswith(VIDEO)
            and rec["messages"][0]["content"].count(VIDEO) == 1
        )
        assert len(rec["videos"]) == 1 and rec["messages"][1]["content"]
        assert frames_for_record(rec, 16).shape[0] == rec["meta"]["n_frames"]


def test_offline_records_of_realtime_kinds_are_true_at_the_end_of_their_clip():
    """A real-time kind asked offline: the video is cut after the frame the answer describes, the
    loader hands over exactly those frames, and the answer is what the world shows there."""
    from engine.train import small

    kinds = set()
    for seed in range(60):
        video = make_video(seed)
        rec = world_offline_record(video, np.random.default_rng(seed), p_realtime_kind=1.0)
        q = rec["meta"]["questions"][0]
        assert q["kind"] in synth.OFFLINE_RT_KINDS and q["accept"]
        kinds.add(q["kind"])
        n = rec["meta"]["n_frames"]
        assert 1 <= n <= video.n_frames
        assert small.video_seconds(rec)("any") * rec["meta"]["fps"] == n
        assert frames_for_record(rec, 16).shape[0] == n
        if q["kind"] == "colour":  # "... the [size] shape?": that object, at the clip's last frame
            words = q["text"].rstrip("?").split()
            named = [
                o
                for o in video.states[n - 1].objects
                if o.shape == words[-1] and words[-2] in ("the", o.size)
            ]
            assert [o.colour for o in named] == [q["value"]], (seed, q)
    assert {"count", "colour", "presence"} <= kinds


# ---------------------------------------------------------------------------------------------
# External captions

ANET = {
    "v_one": {
        "duration": 30.0,
        "timestamps": [[1.0, 8.2], [12.0, 25.0], [15.0, 18.0]],
        "sentences": ["a man opens a door", "He walks inside.", "He waves."],
    }
}


def test_activitynet_captions_give_now_records_with_reanswers(tmp_path):
    path = tmp_path / "anet.json"
    path.write_text(json.dumps(ANET))
    (dc,) = load_captions(path)
    assert dc.video == "v_one" and len(dc.captions) == 3
    seen_between = 0
    for seed in range(20):
        rec = caption_record(dc, np.random.default_rng(seed), SynthConfig(p_immediate=0.0))
        check_realtime_record(rec)
        pieces = frame_pieces(rec)
        (q,) = rec["meta"]["questions"]
        assert (
            q["kind"] == "now" and json.loads(rec["videos"][0][len(INFO_PREFIX) :])["video_path"] == "v_one"
        )
        ans = q["answer_frame"]
        assert ans < 8 or 12 <= ans < 25
        for f in range(ans + 1, 30):
            if f in (12, 15):  # a newer caption starts: say it
                assert pieces[f].startswith({12: "He walks inside.", 15: "He waves."}[f])
            else:  # including 9-11 between captions, and 18 when the newer caption ends
                assert _silent(pieces[f]), (seed, f)
                seen_between += 9 <= f <= 11
        if ans < 8:
            assert pieces[ans].startswith("A man opens a door.")
    assert seen_between > 0


def test_youcook_and_list_shapes_parse():
    yc = {"database": {"abc": {"duration": 20, "annotations": [{"segment": [2, 5], "sentence": "cut"}]}}}
    (dc,) = parse_captions(yc)
    assert dc.video == "abc" and dc.captions[0].sentence == "cut"
    items = [{"video": "a.mp4", "duration": 5, "timestamps": [[0, 9]], "sentences": ["x"]}]
    (dc,) = parse_captions(items)
    assert dc.captions[0].end == 5  # clipped to the duration
    assert caption_offline_record(dc)["messages"][1]["content"] == "X."


@pytest.mark.parametrize(
    "obj, field",
    [
        ({"video": "a", "timestamps": [], "sentences": []}, "'duration'"),
        ({"video": "a", "duration": -1, "timestamps": [], "sentences": []}, "'duration'"),
        ({"video": "a", "duration": 9, "timestamps": [[0, 1]], "sentences": []}, "differ in length"),
        (
            {"video": "a", "duration": 9, "timestamps": [[0, 1], [5, 2]], "sentences": ["x", "y"]},
            r"'timestamps'\[1\]",
        ),
        ({"video": "a", "duration": 9, "timestamps": [[0]], "sentences": ["x"]}, r"'timestamps'\[0\]"),
        ({"video": "a", "duration": 9, "timestamps": [[10, 12]], "sentences": ["x"]}, r"'timestamps'\[0\]"),
        ({"video": "a", "duration": 9, "timestamps": [[0, 1]], "sentences": [" "]}, r"'sentences'\[0\]"),
        ({"duration": 9, "timestamps": [], "sentences": []}, "'video'"),
        ({"v_x": [1, 2]}, "video 'v_x'"),
        ({"database": {"y": {"duration": 3, "annotations": [{"segment": [0, 1]}]}}}, r"'annotations'\[0\]"),
        ("text", "expected a JSON object"),
    ],
)
def test_malformed_captions_name_the_field(obj, field):
    with pytest.raises(ValueError, match=field):
        parse_captions(obj, "caps.json")


def test_not_json_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_captions(bad)


# ---------------------------------------------------------------------------------------------
# Paraphrasing and the command line


class FakeRewriter:
    def __init__(self):
        self.calls = []

    def rewrite(self, text, role):
        self.calls.append(role)
        if role == "question":
            return f'"Hey, {text.lower()}"'
        return "Something else entirely." if "display" in text else text.replace("There", "I count: there")


def test_rewriter_changes_questions_and_keeps_values():
    video = make_video(3)
    rw = FakeRewriter()
    cfg = SynthConfig(kinds=(("count", 1.0), ("display", 1.0)))
    rec = world_record(video, np.random.default_rng([3, 0, 1]), cfg, rewriter=rw, rewrite_answers=True)
    check_realtime_record(rec)
    for q in rec["meta"]["questions"]:
        assert q["text"].startswith("Hey, ")
        for s in q["speech"]:
            if q["kind"] == "display":
                assert "display shows" in s["text"]  # the paraphrase lost the number: rejected
            elif s["type"] == "answer":
                assert s["text"].startswith("I count")
    assert "answer" in rw.calls


def test_openai_rewriter_posts_chat_completions(monkeypatch):
    sent = {}

    def fake_urlopen(req, timeout):
        sent["url"], sent["body"], sent["auth"] = (
            req.full_url,
            json.loads(req.data),
            req.get_header("Authorization"),
        )
        reply = {"choices": [{"message": {"content": "How many shapes do you see?"}}]}
        return io.BytesIO(json.dumps(reply).encode())

    from engine.data import rewrite

    monkeypatch.setattr(rewrite.urllib.request, "urlopen", fake_urlopen)
    rw = synth.OpenAIRewriter("http://localhost:8000/v1/", "m", api_key="k")
    assert rw.rewrite("How many objects are there?", "question") == "How many shapes do you see?"
    assert sent["url"] == "http://localhost:8000/v1/chat/completions" and sent["auth"] == "Bearer k"
    assert (
        sent["body"]["model"] == "m"
        and sent["body"]["messages"][-1]["content"] == "How many objects are there?"
    )


def test_cli_writes_valid_jsonl(tmp_path, capsys):
    out = tmp_path / "rt.jsonl"
    assert main(["--seeds", "0-2,7", "--out", str(out), "--tokens-per-second", "50"]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 4
    for line in lines:
        rec = json.loads(line)
        check_realtime_record(rec)
        assert rec["meta"]["tokens_per_second"] == 50
    off = tmp_path / "off.jsonl"
    assert (
        main(["--seeds", "0-1", "--out", str(off), "--offline", "--write-videos", "--video-size", "32"]) == 0
    )
    assert len(off.read_text().splitlines()) == 2
    assert (tmp_path / "world" / "world_000000.mp4").stat().st_size > 0
    caps = tmp_path / "anet.json"
    caps.write_text(json.dumps(ANET))
    assert main(["--captions", str(caps), "--out", str(tmp_path / "c.jsonl")]) == 0
    check_realtime_record(json.loads((tmp_path / "c.jsonl").read_text()))


def test_cli_reports_bad_captions_in_one_line(tmp_path, capsys):
    caps = tmp_path / "bad.json"
    caps.write_text(json.dumps({"v_x": {"duration": 5, "timestamps": [[3, 1]], "sentences": ["x"]}}))
    assert main(["--captions", str(caps), "--out", str(tmp_path / "c.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'timestamps'[0]" in err

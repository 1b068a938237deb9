"""Transcripts survive crashes, read back exactly, and export to subtitles and Markdown a user can read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.events import (
    Error,
    FrameSeen,
    Revision,
    SessionEnd,
    SessionStart,
    Silence,
    SpeechEnd,
    SpeechStart,
    Stats,
    Token,
    TurnEnd,
    TurnStart,
)
from engine.export import (
    AnswerSegment,
    ErrorNote,
    Question,
    SilentStretch,
    build_conversation,
    format_timestamp,
    subtitle_cues,
    to_markdown,
    to_srt,
    to_webvtt,
    write_subtitles,
)
from engine.transcript import (
    TranscriptWriter,
    list_sessions,
    load_transcript,
    new_session_id,
    read_transcript,
    session_path,
)

ROOT = Path(__file__).resolve().parents[1]


def session(sid: str = "s1", end: bool = True) -> list:
    """A short session: silence, a question, an answer, a revision, a cut-off answer."""
    events = [
        SessionStart(0.0, sid, "synthetic", "tiny"),
        TurnStart(0.0, 0, ""),
        FrameSeen(0.0, 0, 0.0, 5),
        Silence(0.0, 0, 0),
        Silence(1.0, 0, 1),
        Silence(2.0, 0, 2),
        TurnEnd(2.5, 0, True),
        TurnStart(2.5, 1, "What is on the table?"),
        SpeechStart(3.0, 1, 0),
        Token(3.0, 1, 0, "A red"),
        Token(3.2, 1, 0, " cup."),
        SpeechEnd(3.5, 1, 0, "A red cup."),
        Silence(4.0, 1, 4),
        SpeechStart(6.0, 1, 1, revises=0),
        Revision(6.0, 1, 1, 0, "A red cup."),
        Token(6.0, 1, 1, "Now a blue cup."),
        SpeechEnd(7.0, 1, 1, "Now a blue cup."),
        Stats(7.5, 1.0, 0.1, 8, 0, 20.0, 10.0),
        TurnEnd(8.0, 1, True),
        TurnStart(8.0, 2, "And now?"),
        SpeechStart(8.5, 2, 2),
        Token(8.5, 2, 2, "It is"),
        TurnEnd(9.0, 2, True),
        Error(9.5, "The camera stopped delivering frames (unplugged?).", "source"),
    ]
    if end:
        events.append(SessionEnd(10.0, "stopped"))
    return events


# -- writing and reading -------------------------------------------------------------------------


def test_round_trip_and_append(tmp_path):
    path = tmp_path / "s1.jsonl"
    with TranscriptWriter(path) as w:
        w.write_all(session())
    assert read_transcript(path) == session()
    with TranscriptWriter(path) as w:  # a second run appends, never truncates
        w.write(SessionStart(0.0, "s1", "webcam:0", "tiny"))
    events = read_transcript(path)
    assert events[: len(session())] == session() and len(events) == len(session()) + 1
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["kind"] == "SessionStart"  # plain JSONL, one event a line


def test_unicode_text_survives(tmp_path):
    path = tmp_path / "u.jsonl"
    with TranscriptWriter(path) as w:
        w.write(Token(1.0, 1, 0, "café ☕ 日本"))
    assert read_transcript(path)[0].text == "café ☕ 日本"


def test_writer_flushes_within_a_second_without_further_events(tmp_path):
    path = tmp_path / "idle.jsonl"
    w = TranscriptWriter(path)
    try:
        w.write(SessionStart(0.0, "idle", "synthetic", "tiny"))
        t = time.monotonic()
        while path.stat().st_size == 0 and time.monotonic() - t < 3:
            time.sleep(0.02)
        assert path.stat().st_size > 0 and time.monotonic() - t <= 1.0
        w.write(Error(1.0, "Something broke.", "model"))
        assert "Something broke." in path.read_text()  # errors are flushed at once
    finally:
        w.close()
    w.close()  # idempotent
    with pytest.raises(ValueError):
        w.write(SessionEnd(2.0))


def test_sigkill_loses_at_most_the_last_second(tmp_path):
    path = tmp_path / "killed.jsonl"
    child = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from engine.events import SessionStart, Token
        from engine.transcript import TranscriptWriter
        w = TranscriptWriter({str(path)!r})
        w.write(SessionStart(0.0, "killed", "synthetic", "tiny"))
        i = 0
        while True:
            # Lines of varying length, so the kill lands at varying points of the write buffer.
            w.write(Token(time.monotonic(), 1, 0, "word " * (5 + i % 40) + str(i)))
            print(i, time.monotonic(), flush=True)
            i += 1
            time.sleep(0.002)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    written: dict[int, float] = {}
    try:
        first = None
        for line in proc.stdout:
            i, t = line.split()
            written[int(i)] = float(t)
            first = first or time.monotonic()
            if time.monotonic() - first > 2.5:
                break
        kill_t = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    for line in proc.stdout.read().splitlines():  # lines printed before the kill
        i, t = line.split()
        written[int(i)] = float(t)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL and len(written) > 100

    tr = load_transcript(path)  # must parse: at most a cut last line, skipped
    assert tr.skipped_lines in (0, 1) and not tr.complete
    tokens = [e for e in tr.events if isinstance(e, Token)]
    got = [int(e.text.split()[-1]) for e in tokens]
    assert got == list(range(len(got)))  # a prefix, in order, nothing duplicated
    must_have = [i for i, t in written.items() if t <= kill_t - 1.0]
    assert must_have and max(must_have) < len(got), "lost events older than one second"
    # A later run appends cleanly after the cut line.
    with TranscriptWriter(path) as w:
        w.write(SessionEnd(99.0, "stopped"))
    again = load_transcript(path)
    assert again.skipped_lines == 0 and again.complete and len(again.events) == len(tr.events) + 1


def test_reader_tolerates_a_cut_last_line_only(tmp_path, caplog):
    good = [json.dumps(e.to_dict()) for e in session()[:4]]
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(good) + "\n" + good[3][:17])
    tr = load_transcript(cut)
    assert tr.skipped_lines == 1 and len(tr.events) == 4
    assert len(read_transcript(cut)) == 4 and "skipped 1" in caplog.text
    nul = tmp_path / "nul.jsonl"
    nul.write_bytes(("\n".join(good) + "\n").encode() + b"\x00" * 64)  # a power cut's zero-filled tail
    assert len(load_transcript(nul).events) == 4
    unterminated = tmp_path / "whole.jsonl"
    unterminated.write_text("\n".join(good))  # the last event is whole, only its newline is missing
    assert load_transcript(unterminated).skipped_lines == 0 and len(load_transcript(unterminated).events) == 4

    middle = tmp_path / "middle.jsonl"
    middle.write_text("\n".join([good[0], good[1][:10], good[2]]) + "\n")
    with pytest.raises(ValueError, match=r"line 2: malformed JSON"):
        read_transcript(middle)
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text("\n".join([good[0], '{"kind": "Nope", "t": 1}', good[2]]) + "\n")
    with pytest.raises(ValueError, match=r"line 2: unknown event kind 'Nope'"):
        read_transcript(unknown)


def test_appending_to_a_cut_file_repairs_it(tmp_path):
    good = [json.dumps(e.to_dict()) for e in session()[:3]]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(good) + "\n" + good[2][:9])
    with TranscriptWriter(path) as w:
        assert w.repaired_bytes == 9
        w.write(SessionEnd(5.0))
    assert [e.kind for e in read_transcript(path)] == ["SessionStart", "TurnStart", "FrameSeen", "SessionEnd"]
    whole = tmp_path / "w.jsonl"
    whole.write_text("\n".join(good))  # complete last event without newline: kept
    with TranscriptWriter(whole) as w:
        assert w.repaired_bytes == 0
        w.write(SessionEnd(5.0))
    assert len(read_transcript(whole)) == 4


# -- the conversation ----------------------------------------------------------------------------


def test_build_conversation():
    entries = build_conversation(session())
    kinds = [type(e).__name__ for e in entries]
    assert kinds == [
        "SilentStretch",
        "Question",
        "AnswerSegment",
        "SilentStretch",
        "AnswerSegment",
        "Question",
        "AnswerSegment",
        "ErrorNote",
    ]
    assert entries[0] == SilentStretch(0.0, 2.0, 3)
    assert entries[1] == Question(2.5, 1, "What is on the table?")
    assert entries[2] == AnswerSegment(1, 0, 3.0, 3.5, "A red cup.", False, None, 1)
    assert entries[4] == AnswerSegment(1, 1, 6.0, 7.0, "Now a blue cup.", False, 0, None)
    assert entries[6] == AnswerSegment(2, 2, 8.5, 9.0, "It is", True, None, None)  # cut by the TurnEnd
    assert entries[7] == ErrorNote(9.5, "The camera stopped delivering frames (unplugged?).", False)


def test_conversation_of_a_crashed_session_keeps_the_open_segment():
    events = [
        SessionStart(0.0, "c", "demo", "m"),
        TurnStart(1.0, 1, "Hi?"),
        Token(2.0, 1, 5, "Hel"),
        Token(2.1, 1, 5, "lo"),
    ]
    seg = build_conversation(events)[-1]
    assert seg == AnswerSegment(1, 5, 2.0, None, "Hello", False, None, None)  # no SpeechStart needed
    cue = subtitle_cues(events)[-1]
    assert cue.text == "Hello" and 1.5 <= cue.end - cue.start <= 10.0  # a default duration


# -- subtitles -----------------------------------------------------------------------------------


def test_timestamp_formats():
    assert format_timestamp(1.0) == "00:00:01,000"
    assert format_timestamp(1.0, ".") == "00:00:01.000"
    assert format_timestamp(3661.5) == "01:01:01,500"
    assert format_timestamp(59.9996) == "00:01:00,000"
    assert format_timestamp(-3) == "00:00:00,000"


def test_srt_and_webvtt():
    srt = to_srt(session())
    # in order, never overlapping, each read (1.5 s at least, 15 characters a second) where the stream
    # leaves room, and the last ends with the stream (SessionEnd at 10 s)
    assert srt == (
        "1\n00:00:02,500 --> 00:00:04,100\nQ: What is on the table?\n\n"
        "2\n00:00:04,100 --> 00:00:05,600\nA red cup.\n\n"
        "3\n00:00:05,833 --> 00:00:07,500\n(revised) Now a blue cup.\n\n"
        "4\n00:00:07,500 --> 00:00:09,000\nQ: And now?\n\n"
        "5\n00:00:09,000 --> 00:00:10,000\nIt is …\n"
    )
    vtt = to_webvtt(session())
    assert vtt.startswith("WEBVTT\n\n00:00:02.500 --> 00:00:04.100\nQ: What is on the table?\n\n")
    assert "00:00:05.833 --> 00:00:07.500\n(revised) Now a blue cup.\n" in vtt
    tricky = [TurnStart(1.0, 1, "is a<b & c --> d?")]
    assert "Q: is a&lt;b &amp; c --&gt; d?" in to_webvtt(tricky)


def test_long_segment_is_split_into_readable_cues():
    words = " ".join(f"word{i}" for i in range(60))
    events = [SpeechStart(10.0, 1, 0), SpeechEnd(30.0, 1, 0, words)]
    cues = subtitle_cues(events)
    assert len(cues) > 3 and all(len(c.text) <= 84 for c in cues)
    assert cues[0].start == 10.0  # said in 20 s, but shown long enough to be read:
    assert all(c.end - c.start >= len(c.text) / 15 - 1e-9 for c in cues)
    assert all(a.end == pytest.approx(b.start) for a, b in zip(cues, cues[1:], strict=False))
    assert " ".join(c.text for c in cues) == words
    srt = to_srt(events)
    assert all(len(line) <= 84 for line in srt.splitlines())


def test_write_subtitles_by_extension(tmp_path):
    assert write_subtitles(session(), tmp_path / "a.srt").read_text(encoding="utf-8") == to_srt(session())
    assert write_subtitles(session(), tmp_path / "a.VTT").read_text(encoding="utf-8").startswith("WEBVTT")
    with pytest.raises(ValueError, match=r"\.srt or \.vtt"):
        write_subtitles(session(), tmp_path / "a.txt")
    with TranscriptWriter(tmp_path / "live.jsonl", subtitles=tmp_path / "live.srt") as w:
        w.write_all(session())
    assert (tmp_path / "live.srt").read_text(encoding="utf-8") == to_srt(session())


# -- Markdown ------------------------------------------------------------------------------------


def test_markdown_reads_like_a_conversation():
    md = to_markdown(session())
    assert md.startswith("# Session s1\n")
    assert "- Source: `synthetic`" in md
    assert "*[0:00–0:02] silent (3 frames)*" in md
    assert "**[0:02] You:** What is on the table?" in md
    assert "**[0:03] Assistant:** ~~A red cup.~~ *(revised at 0:06)*" in md
    assert "**[0:06] Assistant, revising the answer at 0:03:** Now a blue cup." in md
    assert "**[0:08] Assistant:** It is …*(interrupted)*" in md
    assert "> **[0:09] Error:** The camera stopped delivering frames (unplugged?)." in md
    assert md.rstrip().endswith("*Session ended at 0:10 (stopped).*")
    assert "without a session end" in to_markdown(session(end=False))


# -- the sessions folder -------------------------------------------------------------------------


def test_list_sessions(tmp_path):
    with TranscriptWriter.for_session(tmp_path, "20261124-100000") as w:
        w.write_all(session("20261124-100000"))
    crashed = session_path(tmp_path, "20261124-110000")
    lines = [json.dumps(e.to_dict()) for e in session("20261124-110000", end=False)]
    crashed.write_text("\n".join(lines) + "\n" + lines[-1][:20])
    os.utime(crashed, (time.time() + 100, time.time() + 100))  # newer
    (tmp_path / "broken.jsonl").write_text('{"kind": "SessionStart"\n{}\n')
    os.utime(tmp_path / "broken.jsonl", (time.time() - 1000, time.time() - 1000))  # oldest
    (tmp_path / "notes.txt").write_text("not a transcript")

    infos = list_sessions(tmp_path)
    assert [i.id for i in infos] == ["20261124-110000", "20261124-100000", "broken"]  # newest first
    newest, done = infos[0], infos[1]
    assert not newest.complete and newest.end_reason == "" and newest.questions == 2
    assert done.complete and done.end_reason == "stopped" and done.duration == 10.0
    assert done.source == "synthetic" and done.model == "tiny" and done.path.name == "20261124-100000.jsonl"
    assert abs(done.started_at - (done.path.stat().st_mtime - 10.0)) < 1e-6
    broken = next(i for i in infos if i.id == "broken")
    assert broken.problem and "line 1" in broken.problem and not broken.complete
    assert list_sessions(tmp_path / "missing") == []


ESCAPES = ["../evil", "/etc/passwd", "a/b", "a\\b", "", ".hidden", "a..b", "x" * 200]  # bad input on purpose


@pytest.mark.parametrize("bad", ESCAPES)
def test_session_ids_cannot_escape_the_folder(tmp_path, bad):
    with pytest.raises(ValueError, match="Invalid session id"):
        session_path(tmp_path, bad)
    with pytest.raises(ValueError):
        TranscriptWriter.for_session(tmp_path, bad)


def test_session_ids(tmp_path):
    assert session_path(tmp_path, "20261124-153012") == (tmp_path / "20261124-153012.jsonl").resolve()
    sid = new_session_id(tmp_path, now=0)
    session_path(tmp_path, sid).write_text("")
    sid2 = new_session_id(tmp_path, now=0)
    assert sid2 == f"{sid}-2" and session_path(tmp_path, sid2)


def test_cues_never_overlap_are_readable_and_end_with_the_stream():
    """Random conversations: questions barging in on answers, revisions, short streams."""
    import random

    from engine.export import reading_time

    rng = random.Random(0)
    for case in range(200):
        t, seg, events = 0.0, 0, [SessionStart(0.0, "s", "demo", "m")]
        for turn in range(1, rng.randint(2, 6)):
            t += rng.uniform(0.0, 3.0)
            events.append(TurnStart(t, turn, "What " + "x" * rng.randint(0, 60) + "?"))
            for _ in range(rng.randint(0, 3)):
                t += rng.uniform(0.1, 2.0)
                text = " ".join("w" * rng.randint(1, 8) for _ in range(rng.randint(1, 40)))
                events += [SpeechStart(t, turn, seg), SpeechEnd(t + rng.uniform(0.1, 3.0), turn, seg, text)]
                t, seg = t + 0.1, seg + 1
        end = t + rng.uniform(0.5, 20.0)
        events.append(SessionEnd(end, "stopped"))
        cues = subtitle_cues(events)
        assert all(a.end <= b.start + 1e-9 for a, b in zip(cues, cues[1:], strict=False)), case
        assert all(c.end >= c.start for c in cues) and (not cues or cues[-1].end <= end + 1e-9), case
        if sum(reading_time(c.text) for c in cues) < end - (cues[0].start if cues else 0) - 1:
            short = [c for c in cues if c.end - c.start < reading_time(c.text) - 1e-9]
            assert len(short) <= 1, (case, short)  # with room, at most the one squeezed at the end


def test_the_export_keeps_what_the_session_told_the_user():
    """A Markdown export of a session on unfamiliar video says why the answer is what it is."""
    from engine.events import Unfamiliar
    from engine.export import Notice, to_markdown

    msg = "The video looks unlike anything this model was trained on; it stays quiet."
    events = [
        SessionStart(0.0, "u", "cam.mp4", "m"),
        Silence(0.0, 0, 0),
        Unfamiliar(0.0, 0, True, msg),
        Silence(1.0, 0, 1),
        SessionEnd(2.0, "source ended"),
    ]
    entries = build_conversation(events)
    assert [type(e).__name__ for e in entries] == ["SilentStretch", "Notice", "SilentStretch"]
    assert entries[1] == Notice(0.0, msg)
    assert msg in to_markdown(events)

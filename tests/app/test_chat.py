"""The chat log built from engine events: streaming, revisions, interruptions, and its rendering."""

from __future__ import annotations

from app.chat import ChatLog, clock, render_html
from app.throttle import Throttle
from engine import events as E

COLOURS = {"muted": "#888", "accent": "#08f", "error": "#d00"}


def feed(log, *events):
    for ev in events:
        log.apply(ev)


def test_clock_format():
    assert clock(None) == "--:--"
    assert clock(5.9) == "0:05"
    assert clock(65) == "1:05"
    assert clock(3725) == "1:02:05"


def test_question_confirmed_by_turnstart_keeps_one_entry():
    log = ChatLog()
    log.add_question("hello?")
    feed(log, E.TurnStart(2.0, 1, "hello?"))
    qs = [e for e in log.entries if type(e).__name__ == "Question"]
    assert len(qs) == 1 and qs[0].t == 2.0 and qs[0].turn == 1


def test_revision_marks_the_earlier_answer_superseded():
    log = ChatLog()
    feed(
        log,
        E.TurnStart(1.0, 1, "q"),
        E.SpeechStart(1.2, 1, 0),
        E.Token(1.2, 1, 0, "red"),
        E.SpeechEnd(1.3, 1, 0, "red"),
        E.Silence(1.3, 1, 0),
    )
    assert log.silent
    feed(
        log, E.SpeechStart(9.0, 1, 1, revises=0), E.Revision(9.0, 1, 1, 0, "red"), E.Token(9.0, 1, 1, "blue")
    )
    assert log.speaking and not log.silent
    a0, a1 = log.answers[0], log.answers[1]
    assert a0.state == "superseded" and a0.superseded_at == 9.0 and a0.superseded_by == 1
    assert a1.revises == 0
    html = render_html(log, COLOURS)
    assert (
        "<s>red</s>" in html and "superseded at 0:09" in html and "replaces the answer given at 0:01" in html
    )
    assert "▍" in html  # still streaming


def test_revision_of_unknown_segment_keeps_previous_text():
    log = ChatLog()
    feed(log, E.Revision(9.0, 1, 4, 3, "the old answer"), E.Token(9.0, 1, 4, "new"))
    assert log.answers[3].text == "the old answer" and log.answers[3].state == "superseded"
    assert log.entries.index(log.answers[3]) < log.entries.index(log.answers[4])


def test_interrupted_and_session_end():
    log = ChatLog()
    feed(
        log,
        E.SpeechStart(1, 1, 0),
        E.Token(1, 1, 0, "long ans"),
        E.SpeechEnd(2, 1, 0, "long ans", interrupted=True),
    )
    assert log.answers[0].state == "interrupted"
    feed(log, E.SpeechStart(3, 1, 1), E.SessionEnd(4, "stopped"))
    assert log.answers[1].state == "interrupted"
    assert "Session ended (stopped)" in log.plain_text()


def test_untrained_model_is_said_plainly():
    log = ChatLog()
    feed(log, E.SessionStart(0, "id", "demo", "random", trained=False))
    assert "untrained" in log.plain_text()


def test_text_is_escaped():
    log = ChatLog()
    log.add_question("<b>x</b> & y")
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in render_html(log, COLOURS)


def test_throttle_coalesces_bursts(qtbot):
    calls = []
    t = Throttle(lambda: calls.append(1), interval_ms=30)
    for _ in range(100):
        t()
    assert len(calls) == 1  # the leading call runs at once
    qtbot.waitUntil(lambda: len(calls) == 2, timeout=1000)  # the burst's tail runs once at the end
    qtbot.wait(80)
    assert len(calls) == 2


def test_the_chat_follows_new_answers_holds_when_scrolled_up_and_jumps_back(qtbot):
    from app.chat import ChatView

    view = ChatView()
    qtbot.addWidget(view)
    view.resize(360, 240)
    view.show()
    log = view.log
    bar = view.verticalScrollBar()

    def say(i: int) -> None:
        log.apply(E.SpeechStart(float(i), 1, i))
        log.apply(E.SpeechEnd(float(i), 1, i, f"answer number {i}, a line long enough to wrap once or twice"))
        view.changed()
        view.flush()

    for i in range(40):
        say(i)
    assert bar.maximum() > 0 and bar.value() == bar.maximum()  # following: the newest line is in view
    assert not view.latest.isVisible()
    bar.setValue(bar.maximum() // 3)  # the user scrolls up to read
    held = bar.value()
    for i in range(40, 50):
        say(i)
    assert bar.value() == held  # holds still while they read
    assert view.latest.isVisible()
    qtbot.mouseClick(view.latest, __import__("app.qt", fromlist=["Qt"]).Qt.MouseButton.LeftButton)
    assert bar.value() == bar.maximum() and not view.latest.isVisible()
    say(50)
    assert bar.value() == bar.maximum()  # following again


def test_each_answer_can_be_copied(qtbot):
    from app.chat import ChatView
    from app.qt import QtCore, QtGui

    view = ChatView()
    qtbot.addWidget(view)
    view.log.apply(E.SpeechStart(1.0, 1, 7))
    view.log.apply(E.SpeechEnd(2.0, 1, 7, "There are 3 objects."))
    view.flush()
    assert "copy:7" in view.toHtml()
    view.anchorClicked.emit(QtCore.QUrl("copy:7"))  # what a click on [copy] sends
    assert QtGui.QGuiApplication.clipboard().text() == "There are 3 objects."


def test_answers_render_markdown_and_stay_escaped():
    from app.chat import markdown_inline

    assert markdown_inline("There are **3** objects, *all* red: `ok`") == (
        "There are <b>3</b> objects, <i>all</i> red: <code>ok</code>"
    )
    assert (
        markdown_inline("Seen:\n- a red circle\n* a blue star") == "Seen:<br>• a red circle<br>• a blue star"
    )
    assert markdown_inline("a <b>tag</b> & 2*3*4") == "a &lt;b&gt;tag&lt;/b&gt; &amp; 2*3*4"

"""The chat pane: a plain-Python log built from engine events, and the widget that shows it.

`ChatLog` owns the conversation as the user sees it: questions, answers streaming token by token,
revisions (a later answer under the same question, with the earlier one kept and marked superseded),
interruptions, notes and errors, each with its time on the stream clock. It is built only from
engine events (plus the user's own question, shown at once before the engine confirms it), so a past
session's transcript replays into the same view. It knows nothing of Qt or threads.

`ChatView` renders the log as HTML. Re-rendering per token would cost a layout per token, so the
window calls `changed()` per event and a `Throttle` repaints at most every 25 ms (40 Hz).
"""

from __future__ import annotations

import html
import re
import time
from dataclasses import dataclass, field
from pathlib import PurePath

from app.qt import QtCore, QtGui, QtWidgets
from app.throttle import Throttle
from engine import events as E
from engine.bundled import display_name

MAX_RENDERED = 300  # older entries stay in the log (and the transcript) but are not re-rendered


def clock(t: float | None) -> str:
    """Stream-clock time as m:ss (h:mm:ss past an hour); '--:--' before the engine stamped it."""
    if t is None:
        return "--:--"
    s = max(0, int(t))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class Question:
    text: str
    turn: int | None = None  # None until the engine's TurnStart confirms it
    t: float | None = None  # stream time of the TurnStart
    wall: float = field(default_factory=time.time)
    via: str = "typed"  # "typed" or "voice"


@dataclass
class Answer:
    turn: int
    segment: int
    t: float  # stream time the answer began
    text: str = ""
    state: str = "speaking"  # "speaking", "done", "interrupted", "superseded"
    revises: int | None = None  # the segment this one replaces
    superseded_by: int | None = None
    superseded_at: float | None = None
    t_end: float | None = None


@dataclass
class Note:
    text: str
    t: float | None = None
    kind: str = "info"  # "info" or "error"


Entry = Question | Answer | Note


class ChatLog:
    """The conversation, updated by `apply(event)`; `entries` in display order."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.answers: dict[int, Answer] = {}  # by segment id
        self.silent = False  # the model chose silence and is watching
        self.speaking = False
        self.trained = True
        self.version = 0  # bumps on every visible change

    def _touch(self) -> None:
        self.version += 1

    # ---- what the user does ----------------------------------------------------------------------
    def add_question(self, text: str, via: str = "typed") -> Question:
        q = Question(text, via=via)
        self.entries.append(q)
        self._touch()
        return q

    def add_note(self, text: str, t: float | None = None, kind: str = "info") -> None:
        self.entries.append(Note(text, t, kind))
        self._touch()

    # ---- what the engine says --------------------------------------------------------------------
    def apply(self, ev: E.Event) -> bool:
        """Fold one event in; True when something visible changed."""
        handler = getattr(self, "_on_" + ev.kind, None)
        if handler is None:
            return False
        changed = handler(ev)
        if changed:
            self._touch()
        return bool(changed)

    def _on_SessionStart(self, ev: E.SessionStart) -> bool:
        self.trained = ev.trained
        source = PurePath(ev.source).name if ("/" in ev.source or "\\" in ev.source) else ev.source
        how = f", {ev.mode} mode, decoding: {ev.decoding}" if ev.mode else ""
        self.add_note(f"Session started on {source} (model: {display_name(ev.model)}{how}).", ev.t)
        if not ev.trained:
            self.add_note("This model is untrained (random weights): its answers are noise.", ev.t)
        return True

    def _on_TurnStart(self, ev: E.TurnStart) -> bool:
        if ev.turn == 0:
            return False
        for q in reversed(self.entries):
            if isinstance(q, Question) and q.turn is None and q.text == ev.question:
                q.turn, q.t = ev.turn, ev.t
                return True
        q = Question(ev.question, ev.turn, ev.t)
        self.entries.append(q)
        return True

    def _on_TurnEnd(self, ev: E.TurnEnd) -> bool:
        return False

    def _answer(self, turn: int, segment: int, t: float) -> Answer:
        a = self.answers.get(segment)
        if a is None:
            a = Answer(turn, segment, t)
            self.answers[segment] = a
            self.entries.append(a)
        return a

    def _supersede(self, old_id: int, new: Answer, t: float, previous_text: str = "") -> None:
        old = self.answers.get(old_id)
        if old is None:  # e.g. a transcript opened mid-way: keep what the event remembers
            old = Answer(new.turn, old_id, t, previous_text, "done")
            self.answers[old_id] = old
            self.entries.insert(self.entries.index(new), old)
        old.state = "superseded"
        old.superseded_by, old.superseded_at = new.segment, t
        new.revises = old_id

    def _on_SpeechStart(self, ev: E.SpeechStart) -> bool:
        a = self._answer(ev.turn, ev.segment, ev.t)
        a.state = "speaking"
        if ev.revises is not None:
            self._supersede(ev.revises, a, ev.t)
        self.speaking, self.silent = True, False
        return True

    def _on_Revision(self, ev: E.Revision) -> bool:
        a = self._answer(ev.turn, ev.segment, ev.t)
        self._supersede(ev.revises, a, ev.t, ev.previous_text)
        return True

    def _on_Token(self, ev: E.Token) -> bool:
        a = self._answer(ev.turn, ev.segment, ev.t)
        self.speaking, self.silent = True, False
        if not ev.text:
            return False
        a.text += ev.text
        return True

    def _on_SpeechEnd(self, ev: E.SpeechEnd) -> bool:
        a = self._answer(ev.turn, ev.segment, ev.t)
        a.text = ev.text or a.text  # the engine's whole-segment text is authoritative
        if a.state != "superseded":
            a.state = "interrupted" if ev.interrupted else "done"
        a.t_end = ev.t
        self.speaking = False
        return True

    def _on_Silence(self, ev: E.Silence) -> bool:
        was = self.silent
        self.silent, self.speaking = True, False
        return not was

    def _on_Compacted(self, ev: E.Compacted) -> bool:
        self.entries.append(Note(ev.message, ev.t))
        return True

    def _on_Unfamiliar(self, ev: E.Unfamiliar) -> bool:
        self.entries.append(Note(ev.message, ev.t))
        return True

    def _on_Error(self, ev: E.Error) -> bool:
        where = f" ({ev.where})" if ev.where else ""
        self.entries.append(Note(f"{ev.message}{where}", ev.t, "error"))
        return True

    def _on_SessionEnd(self, ev: E.SessionEnd) -> bool:
        self.silent = self.speaking = False
        for a in self.answers.values():
            if a.state == "speaking":
                a.state = "interrupted"
        self.entries.append(Note(f"Session ended ({ev.reason}).", ev.t))
        return True

    # ---- reading ----------------------------------------------------------------------------------
    def plain_text(self) -> str:
        """The conversation as plain text (tests, copy to clipboard)."""
        out = []
        for e in self.entries:
            if isinstance(e, Question):
                out.append(f"[{clock(e.t)}] You: {e.text}")
            elif isinstance(e, Answer):
                mark = {"superseded": " (superseded)", "interrupted": " (interrupted)"}.get(e.state, "")
                rev = f" (revises {clock(self.answers[e.revises].t)})" if e.revises in self.answers else ""
                out.append(f"[{clock(e.t)}] Assistant{rev}{mark}: {e.text}")
            else:
                out.append(f"[{clock(e.t)}] {'Error' if e.kind == 'error' else 'Note'}: {e.text}")
        return "\n".join(out)


# ---- the view --------------------------------------------------------------------------------------


class ChatView(QtWidgets.QTextBrowser):
    """Renders a ChatLog; call `changed()` as often as you like, it repaints at most every 25 ms."""

    def __init__(self, log: ChatLog | None = None, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("chat")
        self.setAccessibleName("Conversation")
        self.setOpenExternalLinks(False)
        self.setOpenLinks(False)  # our links are actions ("copy:SEGMENT"), not places to go
        self.anchorClicked.connect(self._on_link)
        self.log = log or ChatLog()
        self.throttle = Throttle(self._render, 25, self)
        self._rendered_version = -1
        # Follow the newest line while the user is at the bottom; hold still once they scroll up,
        # and offer a way back down.
        self.following = True
        self.latest = QtWidgets.QToolButton(self)
        self.latest.setObjectName("jump-to-latest")
        self.latest.setText("↓ Latest")
        self.latest.setToolTip("Jump to the newest message (Ctrl+End)")
        self.latest.setAccessibleName("Jump to the newest message")
        self.latest.clicked.connect(self.jump_to_latest)
        self.latest.hide()
        self._rendering = False
        self._colour_cache: tuple[int, dict[str, str]] | None = None
        self.verticalScrollBar().valueChanged.connect(self._scrolled)
        self.verticalScrollBar().rangeChanged.connect(self._range_changed)

    def set_log(self, log: ChatLog) -> None:
        self.log = log
        self._rendered_version = -1
        self.changed()

    def changed(self) -> None:
        if self.log.version != self._rendered_version:
            self.throttle()

    def flush(self) -> None:
        self.throttle.flush()
        if self.log.version != self._rendered_version:
            self._render()

    def _colours(self) -> dict[str, str]:
        """The chat's colours from the palette, each raised to AA contrast against the background."""
        from app.desktop import readable

        pal = self.palette()
        key = pal.cacheKey()  # repaints run at up to 40 Hz; the palette changes with the theme only
        if self._colour_cache is not None and self._colour_cache[0] == key:
            return self._colour_cache[1]
        R = QtGui.QPalette.ColorRole
        base = pal.color(R.Base)
        colours = {
            "text": readable(pal.color(R.Text), base).name(),
            "muted": readable(pal.color(R.PlaceholderText), base).name(),
            "accent": readable(pal.color(R.Highlight), base).name(),
            "error": readable(QtGui.QColor("#d13438"), base).name(),
        }
        self._colour_cache = (key, colours)
        return colours

    def _render(self) -> None:
        bar = self.verticalScrollBar()
        held = bar.value()
        self._rendering = True  # setHtml scrolls to the top: that is not the user scrolling
        try:
            self.setHtml(render_html(self.log, self._colours()))
            self.document().documentLayout().documentSize()  # lay out now: the scroll range is current
        finally:
            self._rendering = False
        self._rendered_version = self.log.version
        if self.following:
            bar.setValue(bar.maximum())
        else:
            bar.setValue(min(held, bar.maximum()))
            self.latest.show()
            self._place_latest()

    def _on_link(self, url) -> None:
        text = url.toString()
        if text.startswith("copy:"):
            self.copy_answer(int(text[5:]))

    def copy_answer(self, segment: int) -> str:
        """Put one answer's text on the clipboard (the [copy] link after each answer)."""
        a = self.log.answers.get(segment)
        text = a.text.strip() if a is not None else ""
        if text:
            QtGui.QGuiApplication.clipboard().setText(text)
        return text

    def at_bottom(self) -> bool:
        bar = self.verticalScrollBar()
        return bar.value() >= bar.maximum() - 4

    def jump_to_latest(self) -> None:
        self.following = True
        self.verticalScrollBar().setValue(self.verticalScrollBar().maximum())
        self.latest.hide()

    def _scrolled(self, _value: int) -> None:
        if self._rendering:
            return
        self.following = self.at_bottom()
        if self.following:
            self.latest.hide()

    def _range_changed(self, _lo: int, hi: int) -> None:
        if self.following and not self._rendering:
            self.verticalScrollBar().setValue(hi)  # a re-wrap (resize, font) keeps the newest line in view

    def _place_latest(self) -> None:
        vp = self.viewport().geometry()
        self.latest.adjustSize()
        self.latest.move(vp.right() - self.latest.width() - 8, vp.bottom() - self.latest.height() - 8)
        self.latest.raise_()

    def resizeEvent(self, e) -> None:  # noqa: N802
        super().resizeEvent(e)
        self._place_latest()

    def keyPressEvent(self, e) -> None:  # noqa: N802
        if e.key() == QtCore.Qt.Key.Key_End and e.modifiers() == QtCore.Qt.KeyboardModifier.ControlModifier:
            self.jump_to_latest()
            return
        super().keyPressEvent(e)


_MD = [
    (re.compile(r"`([^`\n]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*\n]+)\*\*"), r"<b>\1</b>"),
    (re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])"), r"<i>\1</i>"),
]


def markdown_inline(text: str) -> str:
    """An answer's Markdown as HTML, the small part models use in a chat: **bold**, *italic*, `code`,
    and lines starting with "- " or "* " as bullets. Everything else is escaped text."""
    lines = []
    for line in html.escape(text).split("\n"):
        stripped = line.lstrip()
        if stripped.startswith(("- ", "* ")):
            line = "• " + stripped[2:]
        for pattern, repl in _MD:
            line = pattern.sub(repl, line)
        lines.append(line)
    return "<br>".join(lines)


def render_html(log: ChatLog, c: dict[str, str]) -> str:
    parts = [f"<div style='color:{c['text']}'>"] if "text" in c else []
    muted = c["muted"]
    for e in log.entries[-MAX_RENDERED:]:
        if isinstance(e, Question):
            via = " (spoken)" if e.via == "voice" else ""
            parts.append(
                f"<p><span style='color:{muted}'>{clock(e.t)}</span> <b>You{via}:</b> {html.escape(e.text)}</p>"
            )
        elif isinstance(e, Answer):
            text = markdown_inline(e.text) or "…"
            label = "Assistant"
            note = ""
            if e.revises is not None and e.revises in log.answers:
                label = "Assistant, revised"
                note = f" <i style='color:{muted}'>(replaces the answer given at {clock(log.answers[e.revises].t)})</i>"
            if e.state == "superseded":
                at = clock(e.superseded_at)
                parts.append(
                    f"<p style='color:{muted}'><span>{clock(e.t)}</span> <b>{label}:</b> <s>{text}</s>"
                    f" <i>(superseded at {at})</i></p>"
                )
                continue
            copy = ""
            if e.state != "speaking" and e.text.strip():
                copy = f" <a href='copy:{e.segment}' style='color:{muted}; text-decoration:none'>[copy]</a>"
            if e.state == "speaking":
                text += f" <span style='color:{c['accent']}'>▍</span>"
            elif e.state == "interrupted":
                note += f" <i style='color:{muted}'>(interrupted)</i>"
            parts.append(
                f"<p><span style='color:{muted}'>{clock(e.t)}</span> <b>{label}:</b> {text}{note}{copy}</p>"
            )
        else:
            colour = c["error"] if e.kind == "error" else muted
            prefix = "⚠ " if e.kind == "error" else ""
            parts.append(
                f"<p style='color:{colour}'><span>{clock(e.t)}</span> <i>{prefix}{html.escape(e.text)}</i></p>"
            )
    if "text" in c:
        parts.append("</div>")
    return "".join(parts)

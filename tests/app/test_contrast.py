"""Every theme, including "follow the system" on a dark desktop, shows chat text at WCAG AA contrast
(4.5:1), measured on the rendered pixels of the chat."""

from __future__ import annotations

import pytest

from app.qt import QtGui
from engine import events as E


def dark_system_palette() -> QtGui.QPalette:
    """A dark desktop theme as some desktops hand it to Qt: a dim placeholder colour."""
    p = QtGui.QPalette()
    C, R = QtGui.QColor, QtGui.QPalette.ColorRole
    for role, c in (
        (R.Window, C(32, 32, 32)), (R.WindowText, C(220, 220, 220)), (R.Base, C(24, 24, 24)),
        (R.Text, C(220, 220, 220)), (R.Button, C(45, 45, 45)), (R.ButtonText, C(220, 220, 220)),
        (R.Highlight, C(61, 174, 233)), (R.PlaceholderText, C(85, 85, 85)),
    ):  # fmt: skip
        p.setColor(role, c)
    return p


def bands(img: QtGui.QImage, bg: QtGui.QColor) -> list[float]:
    """For each run of rows holding something other than the background: the highest contrast of
    any of its pixels against the background (the core colour of that line's glyphs)."""
    from app.desktop import contrast

    out, best, inside = [], 0.0, False
    for y in range(img.height()):
        row = 0.0
        for x in range(0, img.width(), 1):
            c = img.pixelColor(x, y)
            if c.rgb() != bg.rgb():
                row = max(row, contrast(c, bg))
        if row > 1.05:
            best, inside = max(best, row), True
        elif inside:
            out.append(best)
            best, inside = 0.0, False
    return out


@pytest.mark.parametrize("theme", ["light", "dark", "system-dark", "system-light"])
def test_chat_text_reaches_aa_contrast_in_every_theme(qapp, qtbot, theme, monkeypatch):
    from app import desktop
    from app.chat import ChatView

    saved = QtGui.QPalette(qapp.palette())
    if theme.startswith("system"):
        desktop.set_system_palette(
            qapp,
            dark_system_palette() if theme == "system-dark" else QtGui.QPalette(QtGui.QColor(240, 240, 240)),
        )
    try:
        desktop.apply_look(qapp, theme.split("-")[0], 10)
        view = ChatView()
        qtbot.addWidget(view)
        view.resize(520, 400)
        view.show()
        log = view.log
        log.add_note("A note in the muted colour, for instance a session start.", 1.0)
        log.add_note("An error in the error colour: the camera stopped.", 2.0, kind="error")
        log.apply(E.TurnStart(3.0, 1, "How many objects are there?"))
        log.apply(E.SpeechStart(4.0, 1, 0))
        log.apply(E.SpeechEnd(5.0, 1, 0, "There are three objects on the table."))
        view.flush()
        img = view.viewport().grab().toImage()
        bg = view.palette().color(QtGui.QPalette.ColorRole.Base)
        found = bands(img, bg)
        assert len(found) >= 4, found  # the note, the error, the question, the answer
        assert min(found) >= 4.5, f"{theme}: contrast per line {[round(f, 2) for f in found]}"
    finally:
        qapp.setPalette(saved)
        desktop.set_system_palette(qapp, None)

"""A screenshot of the running window shows the video and the conversation."""

from __future__ import annotations

from app.qt import QtCore, QtGui


def distinct_pixels(img: QtGui.QImage, rect: QtCore.QRect, step: int = 7) -> int:
    return len(
        {
            img.pixel(x, y)
            for x in range(rect.left(), rect.right(), step)
            for y in range(rect.top(), rect.bottom(), step)
        }
    )


def test_window_screenshot_has_video_and_chat(make_window, qtbot, tmp_path):
    w = make_window()
    w.resize(1100, 650)
    w.start_source("synthetic")
    qtbot.waitUntil(lambda: w.video.frames_shown >= 2 and w.video.frames_seen >= 1, timeout=5000)
    w.ask("What do you see?")
    qtbot.waitUntil(lambda: len(w.log.answers) >= 2 and not w.log.speaking, timeout=8000)
    w.chat.flush()
    out = tmp_path / "window.png"
    assert w.grab().save(str(out))
    img = QtGui.QImage(str(out))
    assert not img.isNull() and img.width() >= 1000
    video_rect = QtCore.QRect(w.video.mapTo(w, QtCore.QPoint(0, 0)), w.video.size()).adjusted(
        20, 40, -20, -20
    )
    assert distinct_pixels(img, video_rect) > 50  # a real picture, not a flat placeholder
    text = w.chat.toPlainText()
    assert "What do you see?" in text and "lower right corner" in text and "superseded" in text
    chat_rect = QtCore.QRect(w.chat.mapTo(w, QtCore.QPoint(0, 0)), w.chat.size())
    assert distinct_pixels(img, chat_rect, 3) > 2  # text was drawn, not an empty pane


def test_screenshot_script(qtbot, tmp_path):
    from app.screenshot import make_screenshot

    out = make_screenshot(tmp_path / "shot.png", source="synthetic", home=tmp_path / "home")
    img = QtGui.QImage(str(out))
    assert img.width() == 1280 and img.height() == 720

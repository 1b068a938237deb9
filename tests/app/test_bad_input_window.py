"""Bad input round two, in the window: the same classes as tests/reliability/test_bad_input_round2.py
hold for the settings file, the file a user opens and the files a user exports to."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.app.fakes import RealBackend

ROOT = Path(__file__).resolve().parents[2]

BOMB = "\n".join(
    ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    + ["fps: 2.0"]
)


@pytest.mark.timeout(30)
def test_a_settings_alias_bomb_falls_back_to_defaults_with_a_visible_message(make_window, paths):
    from app.settings import Settings, load_settings

    paths.settings_file.write_text(BOMB)
    settings, messages = load_settings(paths.settings_file)
    assert settings.fps == Settings().fps and len(messages) == 1 and "aliases" in messages[0]
    w = make_window(settings=settings.replace(first_run_done=True), messages=messages)
    w.chat.flush()
    assert "aliases (*name) are not allowed" in w.chat.toPlainText()


def test_a_settings_file_that_is_a_device_or_huge_gives_defaults_and_says_so(tmp_path):
    from app.settings import MAX_SETTINGS_BYTES, Settings, load_settings

    link = tmp_path / "settings.yaml"
    os.symlink("/dev/zero", link)
    s, messages = load_settings(link)
    assert s == Settings() and "not a regular file" in messages[0]
    link.unlink()
    link.write_text("fps: 2\n" + "#" * MAX_SETTINGS_BYTES)
    s, messages = load_settings(link)
    assert s == Settings() and "too large" in messages[0]


def test_export_to_a_folder_or_a_full_disk_keeps_the_users_file(make_window, tmp_path, monkeypatch):
    import engine.files as T
    from engine import events as E

    w = make_window()
    w.events = [E.SessionStart(0.0, "s1", "demo", "m"), E.SessionEnd(5.0, "stopped")]
    with pytest.raises(IsADirectoryError):
        w.export_transcript("md", tmp_path)
    out = tmp_path / "exports"
    out.mkdir()
    mine = out / "notes.md"
    mine.write_text("my own notes\n")

    def full(fd, *a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(T.os, "fdopen", full)
    monkeypatch.setattr(
        "app.qt.QtWidgets.QFileDialog.getSaveFileName", lambda *a, **kw: (str(mine), "Markdown (*.md)")
    )
    w.export_dialog("md")
    w.chat.flush()
    assert mine.read_text() == "my own notes\n"  # a failed export never leaves half a file in its place
    assert "Could not write" in w.statusBar().currentMessage() or "Could not write" in w.chat.toPlainText()
    assert [p.name for p in out.iterdir()] == ["notes.md"]  # no temporary file left behind


def test_a_video_whose_name_is_not_utf8_plays_in_the_window(make_window, qtbot, tmp_path):
    from app.settings import Settings

    name = os.path.join(os.fsencode(tmp_path), b"caf\xe9 100% .mp4")
    shutil.copy(ROOT / "assets" / "demo.mp4", name)
    w = make_window(RealBackend(transcripts=False), settings=Settings(first_run_done=True, max_context=2048))
    w.start_source(os.fsdecode(name))
    assert "caf\\xe9 100% .mp4" in w.picker.file_edit.text()  # shown escaped, opened exactly
    qtbot.waitUntil(lambda: w.video.frames_seen >= 2, timeout=20000)
    w.stop()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=5000)
    assert not [e for e in w.events if e.kind == "Error"]

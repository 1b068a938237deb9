"""Past sessions in the window: the Sessions menu, reopening a transcript, exporting SRT / WebVTT /
Markdown. A mixin of `app.window.MainWindow`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from app.chat import ChatLog
from app.qt import QtWidgets
from app.sessions_dialog import EXPORTS, SessionsDialog, load_names


class SessionHistory:
    def _note_past_sessions(self) -> None:
        n = len(self.past_sessions())
        if n:
            self.log.add_note(f"{n} past session{'s' if n != 1 else ''}: see the Sessions menu.")

    def past_sessions(self) -> list[Any]:
        try:
            from engine.transcript import list_sessions

            return list_sessions(self.paths.sessions)
        except (ImportError, OSError):
            return []

    def _fill_sessions_menu(self) -> None:
        m = self.sessions_menu
        m.clear()
        infos = self.past_sessions()
        names = load_names(self.paths.sessions)
        if not infos:
            a = m.addAction("No past sessions yet")
            a.setEnabled(False)
        for info in infos[:25]:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.started_at))
            mins, secs = divmod(int(info.duration), 60)
            q = f"{info.questions} question{'s' if info.questions != 1 else ''}"
            flag = "" if info.complete else " (cut off)"
            name = names.get(info.id)
            label = f"{name or when}  {info.source or '?'}  ·  {q}  ·  {mins}:{secs:02d}{flag}"
            m.addAction(label, lambda p=info.path: self.open_past_session(p))
        m.addSeparator()
        m.addAction("Search, rename, export, delete…", self.show_sessions)
        m.addAction("Open the sessions folder", lambda: self.open_folder(self.paths.sessions))

    def show_sessions(self):
        dlg = SessionsDialog(self)
        dlg.open()
        return dlg

    def open_past_session(self, path: Path) -> bool:
        if self.state != "idle":
            self.show_status("Stop the live session before opening a past one.", error=True)
            return False
        from engine.transcript import load_transcript

        try:
            tr = load_transcript(path)
        except (OSError, ValueError) as e:
            self.show_error(f"The transcript {Path(path).name} cannot be read ({e}).")
            return False
        self.log = ChatLog()
        for ev in tr.events:
            self.log.apply(ev)
        self.log.silent = self.log.speaking = False
        if not tr.complete:
            self.log.add_note("This session was cut off (the app did not close it).")
        self.chat.set_log(self.log)
        self.chat.flush()
        self.events = list(tr.events)
        self.viewing = Path(path)
        self.video.clear(f"Past session {Path(path).stem}: the transcript is shown on the right.")
        self.show_status(f"Opened {Path(path).name}")
        return True

    def export_transcript(self, fmt: str, path: Path) -> Path:
        from engine import export as T
        from engine.files import write_text_atomic

        if not self.events:
            raise ValueError("There is no session to export yet.")
        text = {"srt": T.to_srt, "vtt": T.to_webvtt, "md": T.to_markdown}[fmt](self.events)
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(21, "it is a folder", str(path))
        write_text_atomic(path, text)  # a full disk never leaves half a file where the old one was
        return path

    def export_dialog(self, fmt: str) -> None:
        if not self.events:
            self.show_error("There is no session to export yet: start one, or open a past one (Sessions).")
            return
        label, pattern = EXPORTS[fmt]
        name = (
            self.viewing.stem if self.viewing else getattr(self.session, "session_id", "session")
        ) + pattern[1:]
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, f"Export {label}", str(Path.home() / name), f"{label} ({pattern})"
        )
        if path:
            try:
                self.export_transcript(fmt, Path(path))
            except OSError as e:
                self.show_error(f"Could not write {path}: {e.strerror or e}")
            else:
                self.show_status(f"Exported {path}")

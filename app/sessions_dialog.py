"""Past sessions: search, open, rename, export and delete them.

The sessions folder holds one transcript per session (written by this app). Names a user gives live in
`names.json` beside them (also ours); the transcripts themselves are never rewritten. Search looks at
the name, the source and everything that was said (questions and answers). It knows nothing of the
engine beyond reading transcripts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from app.qt import Qt, QtWidgets

NAMES = "names.json"
EXPORTS = {
    "srt": ("SRT subtitles", "*.srt"),
    "vtt": ("WebVTT subtitles", "*.vtt"),
    "md": ("Markdown", "*.md"),
}


def load_names(folder: Path) -> dict[str, str]:
    try:
        d = json.loads((folder / NAMES).read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in d.items()} if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def save_names(folder: Path, names: dict[str, str]) -> None:
    from engine.files import write_text_atomic

    write_text_atomic(folder / NAMES, json.dumps(names, indent=2, ensure_ascii=False) + "\n")


def session_text(path: Path) -> str:
    """Everything said in a session (questions and answers), lower case, for search."""
    from engine import events as E
    from engine.transcript import load_transcript

    try:
        evs = load_transcript(path).events
    except (OSError, ValueError):
        return ""
    said = [e.question for e in evs if isinstance(e, E.TurnStart)]
    said += [e.text for e in evs if isinstance(e, E.SpeechEnd)]
    return " ".join(said).lower()


class SessionsDialog(QtWidgets.QDialog):
    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.folder: Path = window.paths.sessions
        self.setObjectName("sessions-dialog")
        self.setWindowTitle("Past sessions")
        self.search = QtWidgets.QLineEdit()
        self.search.setObjectName("sessions-search")
        self.search.setPlaceholderText("Search names, sources and what was said")
        self.search.setAccessibleName("Search past sessions")
        self.search.setClearButtonEnabled(True)
        self.list = QtWidgets.QListWidget()
        self.list.setObjectName("sessions-list")
        self.list.setAccessibleName("Past sessions")
        self.list.itemDoubleClicked.connect(lambda _item: self.open_selected())
        self.open_btn = QtWidgets.QPushButton("Open")
        self.rename_btn = QtWidgets.QPushButton("Rename…")
        self.export_btn = QtWidgets.QPushButton("Export…")
        self.delete_btn = QtWidgets.QPushButton("Delete…")
        self.open_btn.clicked.connect(self.open_selected)
        self.rename_btn.clicked.connect(lambda: self.rename_selected())
        self.export_btn.clicked.connect(lambda: self.export_selected())
        self.delete_btn.clicked.connect(lambda: self.delete_selected())
        buttons = QtWidgets.QHBoxLayout()
        for b in (self.open_btn, self.rename_btn, self.export_btn, self.delete_btn):
            buttons.addWidget(b)
        buttons.addStretch(1)
        close = QtWidgets.QPushButton("Close")
        close.clicked.connect(self.reject)
        buttons.addWidget(close)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(self.search)
        lay.addWidget(self.list, 1)
        lay.addLayout(buttons)
        self.resize(640, 420)
        self._text: dict[str, str] = {}  # path -> what was said (read once)
        self._infos: list | None = None  # the sessions folder, read once (and again after a delete)
        self.search.textChanged.connect(self.refresh)
        self.refresh()

    # ---- the list ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        names = load_names(self.folder)
        want = self.search.text().strip().lower()
        self.list.clear()
        if self._infos is None:
            self._infos = self.window.past_sessions()
        for info in self._infos:
            name = names.get(info.id, "")
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.started_at))
            mins, secs = divmod(int(info.duration), 60)
            q = f"{info.questions} question{'s' if info.questions != 1 else ''}"
            label = f"{name or when}  ·  {info.source or '?'}  ·  {q}  ·  {mins}:{secs:02d}"
            if name:
                label += f"  ({when})"
            if want:
                key = str(info.path)
                if key not in self._text:
                    self._text[key] = session_text(info.path)
                hay = f"{name} {info.source} {info.id} {self._text[key]}".lower()
                if not all(word in hay for word in want.split()):
                    continue
            item = QtWidgets.QListWidgetItem(label)
            item.setData(Qt.ItemDataRole.UserRole, (str(info.path), info.id))
            self.list.addItem(item)
        if self.list.count():
            self.list.setCurrentRow(0)
        has = self.list.count() > 0
        for b in (self.open_btn, self.rename_btn, self.export_btn, self.delete_btn):
            b.setEnabled(has)

    def labels(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def _selected(self) -> tuple[Path, str] | None:
        item = self.list.currentItem()
        if item is None:
            return None
        path, sid = item.data(Qt.ItemDataRole.UserRole)
        return Path(path), sid

    # ---- actions -----------------------------------------------------------------------------------
    def open_selected(self) -> bool:
        sel = self._selected()
        if sel is None:
            return False
        ok = self.window.open_past_session(sel[0])
        if ok:
            self.accept()
        return ok

    def rename_selected(self, name: str | None = None) -> bool:
        sel = self._selected()
        if sel is None:
            return False
        names = load_names(self.folder)
        if name is None:
            name, ok = QtWidgets.QInputDialog.getText(
                self, "Rename the session", "Name:", text=names.get(sel[1], "")
            )
            if not ok:
                return False
        name = " ".join(name.split())[:120]
        if name:
            names[sel[1]] = name
        else:
            names.pop(sel[1], None)  # an empty name goes back to the date
        try:
            save_names(self.folder, names)
        except OSError as e:
            self.window.show_error(f"The name could not be saved ({e.strerror or e}).")
            return False
        self.refresh()
        return True

    def export_selected(self, fmt: str = "md", path: Path | None = None) -> Path | None:
        from engine.transcript import load_transcript

        sel = self._selected()
        if sel is None:
            return None
        try:
            events = list(load_transcript(sel[0]).events)
        except (OSError, ValueError) as e:
            self.window.show_error(f"The transcript {sel[0].name} cannot be read ({e}).")
            return None
        if path is None:
            label, pattern = EXPORTS[fmt]
            name, _ = QtWidgets.QFileDialog.getSaveFileName(
                self,
                f"Export {label}",
                str(Path.home() / (sel[0].stem + pattern[1:])),
                f"{label} ({pattern})",
            )
            if not name:
                return None
            path = Path(name)
        before = self.window.events
        try:
            self.window.events = events
            return self.window.export_transcript(fmt, path)
        except OSError as e:
            self.window.show_error(f"Could not write {path}: {e.strerror or e}")
            return None
        finally:
            self.window.events = before

    def delete_selected(self, confirm: bool = True) -> bool:
        sel = self._selected()
        if sel is None:
            return False
        path, sid = sel
        if confirm:
            answer = QtWidgets.QMessageBox.question(
                self, "Delete the session", f"Delete the transcript of {path.stem}? This cannot be undone."
            )
            if answer != QtWidgets.QMessageBox.StandardButton.Yes:
                return False
        if path.parent.resolve() != self.folder.resolve() or path.suffix != ".jsonl":
            return False  # only transcripts of the sessions folder, which this app wrote
        try:
            path.unlink()
        except OSError as e:
            self.window.show_error(f"{path.name} could not be deleted ({e.strerror or e}).")
            return False
        names = load_names(self.folder)
        if names.pop(sid, None) is not None:
            save_names(self.folder, names)
        self._text.pop(str(path), None)
        self._infos = None
        self.refresh()
        return True

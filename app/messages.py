"""Problems the user must see: an error banner with the whole message, and a log of every message.

`ErrorBanner` shows the newest problem in full (wrapped, selectable, with a Copy button) above the
video and chat, instead of cutting it to one status-bar line; it is cleared when the next session
starts well, or by its close button. `MessageLog` keeps every message of this run with its wall time;
the window's "View log" shows it in a read-only, copyable dialog. It knows nothing of the engine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.qt import Qt, QtGui, QtWidgets


@dataclass(frozen=True)
class Message:
    wall: float  # time.time() when it was said
    text: str
    error: bool


class MessageLog:
    def __init__(self, limit: int = 2000) -> None:
        self.items: list[Message] = []
        self.limit = limit

    def add(self, text: str, error: bool = False) -> None:
        self.items.append(Message(time.time(), text, error))
        del self.items[: -self.limit]

    def text(self) -> str:
        return "\n".join(
            f"{time.strftime('%H:%M:%S', time.localtime(m.wall))} {'error' if m.error else 'note '}  {m.text}"
            for m in self.items
        )


class ErrorBanner(QtWidgets.QFrame):
    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("error-banner")
        self.setAccessibleName("Error")
        self.setFrameShape(QtWidgets.QFrame.Shape.StyledPanel)
        self.setStyleSheet(
            "#error-banner { background: #fde7e9; border: 1px solid #d13438; border-radius: 4px; }"
            " #error-banner QLabel { color: #6b0000; }"
        )
        self.label = QtWidgets.QLabel()
        self.label.setObjectName("error-text")
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        self.copy_btn = QtWidgets.QToolButton()
        self.copy_btn.setText("Copy")
        self.copy_btn.setAccessibleName("Copy the error message")
        self.copy_btn.clicked.connect(self.copy)
        self.log_btn = QtWidgets.QToolButton()
        self.log_btn.setText("Log…")
        self.log_btn.setAccessibleName("Show every message of this run")
        self.close_btn = QtWidgets.QToolButton()
        self.close_btn.setText("✕")
        self.close_btn.setAccessibleName("Dismiss the error")
        self.close_btn.clicked.connect(self.clear)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(8, 4, 4, 4)
        lay.addWidget(self.label, 1)
        for b in (self.copy_btn, self.log_btn, self.close_btn):
            lay.addWidget(b, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_error(self, text: str) -> None:
        self.label.setText(text)
        self.show()

    def clear(self) -> None:
        self.label.clear()
        self.hide()

    def copy(self) -> None:
        QtGui.QGuiApplication.clipboard().setText(self.label.text())

    @property
    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""


def show_log(parent: QtWidgets.QWidget, log: MessageLog) -> QtWidgets.QDialog:
    dlg = QtWidgets.QDialog(parent)
    dlg.setObjectName("message-log")
    dlg.setWindowTitle("Messages of this run")
    view = QtWidgets.QPlainTextEdit(log.text() or "No messages yet.")
    view.setObjectName("message-log-text")
    view.setReadOnly(True)
    view.setLineWrapMode(QtWidgets.QPlainTextEdit.LineWrapMode.WidgetWidth)
    buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
    buttons.rejected.connect(dlg.reject)
    copy = buttons.addButton("Copy all", QtWidgets.QDialogButtonBox.ButtonRole.ActionRole)
    copy.clicked.connect(lambda: QtGui.QGuiApplication.clipboard().setText(view.toPlainText()))
    lay = QtWidgets.QVBoxLayout(dlg)
    lay.addWidget(view)
    lay.addWidget(buttons)
    dlg.resize(640, 360)
    dlg.open()
    return dlg


BUNDLED_NOTICE = (
    "The bundled model is a small demo (6.3 M parameters) trained only on a made-up world of coloured "
    "shapes on a textured background: it counts them, names their colours and positions, reads the digit "
    "display and notices shapes that come and go. It cannot understand real camera or screen video: "
    "there it stays quiet and says so when asked. For real video, choose a MOSS-Video-Preview or Llama-3.2-Vision checkpoint "
    "(a GPU is recommended)."
)


class ModelNotice(QtWidgets.QFrame):
    """What the loaded model can and cannot see, with a one-click way to choose a real checkpoint."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("model-notice")
        self.setAccessibleName("About the loaded model")
        self.setFrameShape(QtWidgets.QFrame.Shape.StyledPanel)
        self.label = QtWidgets.QLabel()
        self.label.setObjectName("model-notice-text")
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.choose_btn = QtWidgets.QPushButton("Choose a real checkpoint…")
        self.choose_btn.setObjectName("choose-checkpoint")
        self.choose_btn.setAccessibleName("Choose a real model checkpoint folder")
        self.close_btn = QtWidgets.QToolButton()
        self.close_btn.setText("✕")
        self.close_btn.setAccessibleName("Hide this notice")
        self.close_btn.clicked.connect(self.hide)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(8, 4, 4, 4)
        lay.addWidget(self.label, 1)
        lay.addWidget(self.choose_btn, 0, Qt.AlignmentFlag.AlignTop)
        lay.addWidget(self.close_btn, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_for(self, bundled: bool) -> None:
        if bundled:
            self.label.setText(BUNDLED_NOTICE)
            self.show()
        else:
            self.hide()

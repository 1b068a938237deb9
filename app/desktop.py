"""Desktop integration: one instance at a time, theme and font, "open folder", capture exclusion.

Owns the small platform-facing pieces the window needs and nothing else. It knows nothing of the
engine.

Capture exclusion, honestly: on Windows 10 2004+ `SetWindowDisplayAffinity(WDA_EXCLUDEFROMCAPTURE)`
hides our window from every screen capture (ours included), so the model never watches its own chat.
macOS offers NSWindow.sharingType = none, which needs PyObjC (not a dependency): not done. X11 and
Wayland have no such mechanism. Where exclusion is not possible the window says so when a screen
source is chosen, and the user can capture a region or monitor that does not contain the window.
"""

from __future__ import annotations

import sys
from pathlib import Path

from app.qt import Qt, QtCore, QtGui, QtWidgets

WDA_EXCLUDEFROMCAPTURE = 0x11


def acquire_single_instance(runtime_dir: Path) -> QtCore.QLockFile | None:
    """The lock if we are the only instance (keep it alive for the app's lifetime), else None.

    QLockFile notices a stale lock left by a crashed process (its PID is gone) and takes it over.
    """
    runtime_dir.mkdir(parents=True, exist_ok=True)
    lock = QtCore.QLockFile(str(runtime_dir / "moss-live.lock"))
    lock.setStaleLockTime(0)  # only a dead PID makes a lock stale, never its age
    return lock if lock.tryLock(100) else None


def exclude_from_capture(widget: QtWidgets.QWidget) -> tuple[bool, str]:
    """Ask the OS to leave this window out of screen captures: (done, a sentence for the user)."""
    if sys.platform == "win32":
        try:
            import ctypes

            hwnd = int(widget.winId())
            ok = bool(ctypes.windll.user32.SetWindowDisplayAffinity(hwnd, WDA_EXCLUDEFROMCAPTURE))  # type: ignore[attr-defined]
        except (OSError, AttributeError) as e:
            return False, f"This window could not be hidden from screen capture ({e})."
        if ok:
            return True, "This window is hidden from screen capture."
        return False, "This window could not be hidden from screen capture (Windows 10 2004 or later needed)."
    if sys.platform == "darwin":
        return False, "On macOS this window stays visible to screen capture; capture a region without it."
    return False, "On this system this window stays visible to screen capture; capture a region without it."


def open_folder(path: Path) -> bool:
    """Show `path` in the desktop's file manager; False when there is none to ask (the caller then
    shows the path itself, so the user can go there by hand)."""
    path.mkdir(parents=True, exist_ok=True)
    return QtGui.QDesktopServices.openUrl(QtCore.QUrl.fromLocalFile(str(path)))


INSTANCE_SERVER = "moss-live-instance"


class InstanceServer(QtCore.QObject):
    """The running instance listens on a local socket; a second launch connects, asks it to come
    to the front (and to open a source, when one was named on its command line), and exits."""

    raise_requested = QtCore.Signal(str)  # the source the second launch named, or ""

    def __init__(self, runtime_dir: Path, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        from PySide6.QtNetwork import QLocalServer

        self.name = _server_name(runtime_dir)
        QLocalServer.removeServer(self.name)  # a crashed instance's socket file
        self.server = QLocalServer(self)
        self.server.newConnection.connect(self._accept)
        self.listening = self.server.listen(self.name)

    def _accept(self) -> None:
        conn = self.server.nextPendingConnection()
        if conn is None:
            return
        conn.waitForReadyRead(500)
        msg = bytes(conn.readAll().data()).decode("utf-8", "replace")
        conn.disconnectFromServer()
        if msg.startswith("raise"):
            self.raise_requested.emit(msg[len("raise") :].strip())


def ask_running_instance(runtime_dir: Path, source: str = "") -> bool:
    """Second launch: ask the running instance to come to the front; True when it answered."""
    from PySide6.QtNetwork import QLocalSocket

    sock = QLocalSocket()
    sock.connectToServer(_server_name(runtime_dir))
    if not sock.waitForConnected(1000):
        return False
    sock.write(f"raise {source}".encode())
    sock.flush()
    sock.waitForBytesWritten(1000)
    sock.disconnectFromServer()
    return True


def _server_name(runtime_dir: Path) -> str:
    import hashlib

    return f"{INSTANCE_SERVER}-{hashlib.sha1(str(runtime_dir).encode()).hexdigest()[:10]}"


def bring_to_front(window: QtWidgets.QWidget) -> None:
    if window.isMinimized():
        window.showNormal()
    window.show()
    window.raise_()
    window.activateWindow()


def _dark_palette() -> QtGui.QPalette:
    p = QtGui.QPalette()
    C, R = QtGui.QColor, QtGui.QPalette.ColorRole
    for role, colour in (
        (R.Window, C(37, 37, 38)),
        (R.WindowText, C(230, 230, 230)),
        (R.Base, C(28, 28, 30)),
        (R.AlternateBase, C(45, 45, 48)),
        (R.ToolTipBase, C(45, 45, 48)),
        (R.ToolTipText, C(230, 230, 230)),
        (R.Text, C(230, 230, 230)),
        (R.Button, C(50, 50, 53)),
        (R.ButtonText, C(230, 230, 230)),
        (R.BrightText, C(255, 80, 80)),
        (R.Highlight, C(38, 120, 200)),
        (R.HighlightedText, C(255, 255, 255)),
        (R.PlaceholderText, C(140, 140, 140)),
        (R.Link, C(90, 160, 240)),
    ):
        p.setColor(role, colour)
    p.setColor(QtGui.QPalette.ColorGroup.Disabled, R.Text, C(120, 120, 120))
    p.setColor(QtGui.QPalette.ColorGroup.Disabled, R.ButtonText, C(120, 120, 120))
    return p


def _light_palette() -> QtGui.QPalette:
    p = QtGui.QPalette(QtGui.QColor(240, 240, 240))
    p.setColor(QtGui.QPalette.ColorRole.PlaceholderText, QtGui.QColor(120, 120, 120))
    return p


_SYSTEM_PALETTE: dict[int, QtGui.QPalette] = {}  # id(app) -> the desktop's palette, before ours


def set_system_palette(app: QtWidgets.QApplication, palette: QtGui.QPalette | None) -> None:
    """What "system" means for `app` (None: what Qt reports when apply_look first runs); tests set a
    dark or light desktop this way."""
    if palette is None:
        _SYSTEM_PALETTE.pop(id(app), None)
    else:
        _SYSTEM_PALETTE[id(app)] = palette


def apply_look(app: QtWidgets.QApplication, theme: str, font_size: int) -> None:
    """Theme ("system", "light", "dark") and base font size for the whole app."""
    system = _SYSTEM_PALETTE.setdefault(id(app), QtGui.QPalette(app.palette()))
    if theme == "dark":
        app.setStyle("Fusion")
        app.setPalette(_dark_palette())
    elif theme == "light":
        app.setStyle("Fusion")
        app.setPalette(_light_palette())
    else:
        app.setPalette(system)
    font = app.font()
    font.setPointSize(font_size)
    app.setFont(font)


def key_from_text(text: str) -> QtGui.QKeySequence:
    seq = QtGui.QKeySequence(text)
    return seq if not seq.isEmpty() else QtGui.QKeySequence(Qt.Key.Key_F8)


# ---- contrast (WCAG 2.x) -----------------------------------------------------------------------------

AA = 4.5  # the WCAG AA contrast ratio for body text


def luminance(c: QtGui.QColor) -> float:
    def channel(v: int) -> float:
        x = v / 255.0
        return x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(c.red()) + 0.7152 * channel(c.green()) + 0.0722 * channel(c.blue())


def contrast(a: QtGui.QColor, b: QtGui.QColor) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def readable(colour: QtGui.QColor, background: QtGui.QColor, ratio: float = AA) -> QtGui.QColor:
    """`colour`, made lighter on a dark background or darker on a light one (keeping its hue) until
    it reaches `ratio` against `background`. A desktop theme may hand us a dim placeholder colour or
    a red that is fine on white and unreadable on black; the chat never shows text below AA."""
    c = QtGui.QColor(colour)
    dark_bg = luminance(background) < 0.18
    h, s_, v, a = c.getHsvF()
    h = max(h, 0.0)
    for _ in range(64):
        if contrast(c, background) >= ratio:
            return c
        if dark_bg:
            v = min(1.0, v + 0.04)
            if v >= 1.0:
                s_ = max(0.0, s_ - 0.06)  # past full brightness, wash the colour out towards white
        else:
            v = max(0.0, v - 0.04)
        c = QtGui.QColor.fromHsvF(h, s_, v, a)
    return QtGui.QColor("white" if dark_bg else "black")

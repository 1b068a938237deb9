"""The source picker: the bundled demo, a video file, a webcam, or a screen (whole monitor or a region).

Owns turning the user's choice into the engine's source spec string ("demo", a path, "webcam:N",
"screen:N", "screen:N:left,top,width,height"), listing cameras (in a worker thread: probing devices
can take a while) and monitors, saying plainly when there is none, dragging a screen region, and
clamping a remembered region when its monitor went away or shrank. It knows nothing of sessions;
the engine opens the source and reports failures as events.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from app.qt import Qt, QtCore, QtGui, QtWidgets, Signal
from app.workers import Task
from engine.files import printable

KINDS = ("demo", "file", "webcam", "screen")
VIDEO_FILTER = "Videos (*.mp4 *.mkv *.avi *.mov *.webm *.m4v *.mpg *.mpeg *.wmv *.flv);;All files (*)"


def clamp_saved_region(
    monitor: int, region: tuple[int, int, int, int] | None, monitors: list[Any]
) -> tuple[int, tuple[int, int, int, int] | None, str | None]:
    """Fit a remembered (monitor, region) to the monitors there are now: (monitor, region, note or None).

    `monitors` are engine.sources.MonitorInfo-like (index, width, height, primary). An empty list means
    "unknown" (no display to ask): the choice is kept as it is.
    """
    if not monitors:
        return monitor, region, None
    notes = []
    by_index = {m.index: m for m in monitors}
    if monitor not in by_index:
        fallback = next((m for m in monitors if getattr(m, "primary", False)), monitors[0])
        notes.append(f"Monitor {monitor} is no longer connected; using monitor {fallback.index}.")
        monitor = fallback.index
    m = by_index[monitor]
    if region is not None:
        left, top, w, h = region
        x0, y0 = max(0, left), max(0, top)
        x1, y1 = min(left + w, m.width), min(top + h, m.height)
        if x1 <= x0 or y1 <= y0:
            notes.append(
                f"The saved screen region lies outside monitor {monitor} ({m.width}x{m.height}); "
                "capturing the whole monitor."
            )
            region = None
        elif (x0, y0, x1 - x0, y1 - y0) != tuple(region):
            region = (x0, y0, x1 - x0, y1 - y0)
            notes.append(f"The saved screen region was cut to fit monitor {monitor} ({m.width}x{m.height}).")
    return monitor, region, " ".join(notes) or None


def parse_region(text: str) -> tuple[int, int, int, int] | None:
    """ "left,top,width,height" -> tuple; "" -> None (whole monitor); ValueError with a sentence otherwise."""
    s = text.strip()
    if not s:
        return None
    parts = [p.strip() for p in s.replace(" ", ",").split(",") if p.strip()]
    try:
        nums = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError("A region is four whole numbers: left, top, width, height.") from None
    if len(nums) != 4:
        raise ValueError("A region is four whole numbers: left, top, width, height.")
    if nums[2] <= 0 or nums[3] <= 0:
        raise ValueError("The region's width and height must be positive.")
    return nums  # type: ignore[return-value]


def spec_kind(spec: str) -> str:
    low = spec.strip().lower()
    if low == "demo":
        return "demo"
    if low.startswith("webcam"):
        return "webcam"
    if low.startswith("screen"):
        return "screen"
    return "file"


class SourcePicker(QtWidgets.QWidget):
    changed = Signal()
    region_note = Signal(str)  # a remembered region was adjusted (shown in the status bar)

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("source-picker")
        self.cameras: list[int] = []
        self.monitors: list[Any] = []
        self._camera_task: Task | None = None

        self.kind = QtWidgets.QComboBox()
        self.kind.setAccessibleName("Source kind")
        for key, label in zip(KINDS, ("Demo video", "Video file", "Webcam", "Screen"), strict=True):
            self.kind.addItem(label, key)

        self.stack = QtWidgets.QStackedWidget()
        # demo
        self.demo_label = QtWidgets.QLabel()
        self.stack.addWidget(self.demo_label)
        # file
        file_row = QtWidgets.QWidget()
        fl = QtWidgets.QHBoxLayout(file_row)
        fl.setContentsMargins(0, 0, 0, 0)
        self.file_edit = QtWidgets.QLineEdit()
        self._file_exact: str | None = None  # the last name set from code (set_file / set_spec)
        self._file_shown = ""
        self.file_edit.setPlaceholderText("Choose a video file or drop one on the window")
        self.file_edit.setAccessibleName("Video file path")
        self.browse = QtWidgets.QPushButton("Browse…")
        self.browse.setAccessibleName("Browse for a video file")
        fl.addWidget(self.file_edit, 1)
        fl.addWidget(self.browse)
        self.stack.addWidget(file_row)
        # webcam
        cam_row = QtWidgets.QWidget()
        cl = QtWidgets.QHBoxLayout(cam_row)
        cl.setContentsMargins(0, 0, 0, 0)
        self.camera_combo = QtWidgets.QComboBox()
        self.camera_combo.setAccessibleName("Camera")
        self.camera_note = QtWidgets.QLabel()
        self.camera_note.setObjectName("camera-note")
        self.refresh_cameras_btn = QtWidgets.QToolButton()
        self.refresh_cameras_btn.setText("⟳")
        self.refresh_cameras_btn.setAccessibleName("Look for cameras again")
        self.refresh_cameras_btn.setToolTip("Look for cameras again")
        cl.addWidget(self.camera_combo)
        cl.addWidget(self.camera_note, 1)
        cl.addWidget(self.refresh_cameras_btn)
        self.stack.addWidget(cam_row)
        # screen
        scr_row = QtWidgets.QWidget()
        sl = QtWidgets.QHBoxLayout(scr_row)
        sl.setContentsMargins(0, 0, 0, 0)
        self.monitor_combo = QtWidgets.QComboBox()
        self.monitor_combo.setAccessibleName("Monitor")
        self.region_edit = QtWidgets.QLineEdit()
        self.region_edit.setPlaceholderText("whole monitor (or left,top,width,height)")
        self.region_edit.setAccessibleName("Screen region")
        self.drag_region_btn = QtWidgets.QPushButton("Drag a region…")
        self.drag_region_btn.setAccessibleName("Drag a screen region")
        self.screen_note = QtWidgets.QLabel()
        sl.addWidget(self.monitor_combo)
        sl.addWidget(self.region_edit, 1)
        sl.addWidget(self.drag_region_btn)
        sl.addWidget(self.screen_note)
        self.stack.addWidget(scr_row)

        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(QtWidgets.QLabel("Source:"))
        lay.addWidget(self.kind)
        lay.addWidget(self.stack, 1)

        # Notes may be long ("No screen to capture (no display)."): they shrink with the window and
        # keep their whole text in a tooltip, so the window works at 800 px with every source.
        for note in (self.demo_label, self.camera_note, self.screen_note):
            note.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
            note.setMinimumWidth(0)
        self.region_edit.setMinimumWidth(60)
        self.kind.currentIndexChanged.connect(self._on_kind)
        self.browse.clicked.connect(self.choose_file)
        self.file_edit.textChanged.connect(self.changed)
        self.camera_combo.currentIndexChanged.connect(self.changed)
        self.monitor_combo.currentIndexChanged.connect(self.changed)
        self.region_edit.textChanged.connect(self.changed)
        self.refresh_cameras_btn.clicked.connect(self.refresh_cameras)
        self.drag_region_btn.clicked.connect(self.drag_region)
        self._update_demo_label()
        self.refresh_monitors()

    # ---- lists ------------------------------------------------------------------------------------
    def _update_demo_label(self) -> None:
        from engine.sources import demo_video_path

        p = demo_video_path()
        _say(
            self.demo_label,
            f"Bundled demo ({p.name})" if p.is_file() else f"The demo video is missing ({p}); choose a file.",
        )

    def refresh_cameras(self) -> None:
        """List cameras in a worker thread; the combo says 'looking…' meanwhile."""
        if self._camera_task is not None and not self._camera_task.finished:
            return
        self.camera_combo.clear()
        self.camera_combo.setEnabled(False)
        _say(self.camera_note, "Looking for cameras…")

        def work(report: Any) -> list[int]:
            from engine.sources import list_cameras

            return list_cameras()

        self._camera_task = (
            Task("camera-probe", work, self).connect(self._cameras_found, self._cameras_failed).start()
        )

    def _cameras_found(self, cameras: list[int]) -> None:
        self.set_cameras(cameras)

    def _cameras_failed(self, message: str) -> None:
        self.set_cameras([])
        _say(self.camera_note, f"Cameras could not be listed: {message}")

    def set_cameras(self, cameras: list[int]) -> None:
        self.cameras = list(cameras)
        self.camera_combo.clear()
        for i in self.cameras:
            self.camera_combo.addItem(f"Camera {i}", i)
        self.camera_combo.setEnabled(bool(self.cameras))
        _say(
            self.camera_note,
            "" if self.cameras else "No camera found. Connect one and press ⟳, or pick another source.",
        )
        self.changed.emit()

    def refresh_monitors(self) -> None:
        from engine.sources import list_monitors

        self.set_monitors(list_monitors())

    def set_monitors(self, monitors: list[Any]) -> None:
        current = self.monitor_combo.currentData()
        self.monitors = list(monitors)
        self.monitor_combo.clear()
        for m in self.monitors:
            star = " (primary)" if getattr(m, "primary", False) else ""
            self.monitor_combo.addItem(f"Monitor {m.index}: {m.width}x{m.height}{star}", m.index)
        if current is not None:
            i = self.monitor_combo.findData(current)
            if i >= 0:
                self.monitor_combo.setCurrentIndex(i)
        has = bool(self.monitors)
        self.monitor_combo.setEnabled(has)
        self.drag_region_btn.setEnabled(has)
        _say(self.screen_note, "" if has else "No screen to capture (no display).")

    # ---- the choice -------------------------------------------------------------------------------
    def current_kind(self) -> str:
        return self.kind.currentData()

    def _on_kind(self) -> None:
        self.stack.setCurrentIndex(self.kind.currentIndex())
        if self.current_kind() == "webcam" and not self.cameras and self._camera_task is None:
            self.refresh_cameras()
        self.changed.emit()

    def set_kind(self, kind: str) -> None:
        self.kind.setCurrentIndex(KINDS.index(kind))

    def spec(self) -> str:
        """The engine source spec for the current choice; ValueError with a sentence if incomplete."""
        kind = self.current_kind()
        if kind == "demo":
            return "demo"
        if kind == "file":
            text = self.file_edit.text()
            if self._file_exact is not None and text == self._file_shown:
                return self._file_exact  # the name as the OS spells it (Qt cannot hold every byte)
            path = text if os.path.exists(text) else text.strip()  # a real name may end in a space
            if not path:
                raise ValueError("Choose a video file first (Browse…, or drop one on the window).")
            return path
        if kind == "webcam":
            index = self.camera_combo.currentData()
            if index is None:
                raise ValueError("No camera found. Connect one and press ⟳, or pick another source.")
            return f"webcam:{index}"
        monitor = self.monitor_combo.currentData()
        if monitor is None:
            monitor = 1  # no display to list: let the engine say so when it opens the screen
        region = parse_region(self.region_edit.text())
        return f"screen:{monitor}" + ("" if region is None else ":" + ",".join(map(str, region)))

    def screen_choice(self) -> tuple[int, tuple[int, int, int, int] | None]:
        monitor = self.monitor_combo.currentData() or 1
        try:
            region = parse_region(self.region_edit.text())
        except ValueError:
            region = None
        return int(monitor), region

    def set_spec(self, spec: str) -> None:
        kind = spec_kind(spec)
        if kind == "file":
            self._show_file(spec)
        elif kind == "webcam":
            idx = spec.split(":", 1)[1] if ":" in spec else "0"
            i = self.camera_combo.findData(int(idx)) if idx.isdigit() else -1
            if i >= 0:
                self.camera_combo.setCurrentIndex(i)
        self.set_kind(kind)

    def restore_screen(self, monitor: int, region: tuple[int, int, int, int] | None) -> None:
        """Put back the remembered monitor and region, clamped to the monitors there are now."""
        monitor, region, note = clamp_saved_region(monitor, region, self.monitors)
        i = self.monitor_combo.findData(monitor)
        if i >= 0:
            self.monitor_combo.setCurrentIndex(i)
        self.region_edit.setText("" if region is None else ",".join(map(str, region)))
        if note:
            self.region_note.emit(note)

    def set_file(self, path: str | Path) -> None:
        self._show_file(str(path))
        self.set_kind("file")

    def _show_file(self, path: str) -> None:
        """Show a file name and keep it exactly: a name with bytes that are not UTF-8 (any the OS
        accepts) is shown with them escaped, and the exact name is what starts the session."""
        shown = printable(path)
        self._file_exact, self._file_shown = path, shown
        self.file_edit.setText(shown)

    def choose_file(self) -> str | None:
        start = self.file_edit.text().strip() or str(Path.home())
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open a video file", start, VIDEO_FILTER)
        if path:
            self.set_file(path)
        return path or None

    def drag_region(self) -> None:
        monitor = self.monitor_combo.currentData()
        m = next((x for x in self.monitors if x.index == monitor), None)
        if m is None:
            return
        self._selector = RegionSelector(m, self)
        self._selector.chosen.connect(lambda r: self.region_edit.setText(",".join(map(str, r))))
        self._selector.show_on_monitor()


class RegionSelector(QtWidgets.QWidget):
    """A full-screen sheet over one monitor showing a screenshot of it, dimmed: drag a rectangle (shown
    undimmed), Esc cancels. Drawing from a screenshot instead of a translucent window works without a
    compositor (a translucent window is black there) and never shows a stale overlay."""

    chosen = Signal(tuple)  # (left, top, width, height) in the monitor's pixels

    def __init__(self, monitor: Any, parent: QtWidgets.QWidget | None = None):
        super().__init__(
            None, Qt.WindowType.FramelessWindowHint | Qt.WindowType.WindowStaysOnTopHint | Qt.WindowType.Tool
        )
        self.setObjectName("region-selector")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.shot = QtGui.QPixmap()  # the monitor as it was when the selector opened
        self.monitor = monitor
        self._origin: QtCore.QPoint | None = None
        self._rect = QtCore.QRect()
        self._scale = 1.0  # monitor pixels per logical pixel

    def show_on_monitor(self, screenshot: QtGui.QPixmap | None = None) -> None:
        m = self.monitor
        screen = None
        for s in QtGui.QGuiApplication.screens():
            g, dpr = s.geometry(), s.devicePixelRatio()
            if abs(g.x() * dpr - m.left) < 2 and abs(g.y() * dpr - m.top) < 2:
                screen = s
                break
        screen = screen or QtGui.QGuiApplication.primaryScreen()
        geo = screen.geometry()
        self._scale = m.width / max(1, geo.width())
        self.shot = screenshot if screenshot is not None else screen.grabWindow(0)
        self.setGeometry(geo)
        self.show()
        self.activateWindow()

    def region(self) -> tuple[int, int, int, int]:
        r = self._rect.normalized()
        s = self._scale
        return (
            round(r.x() * s),
            round(r.y() * s),
            max(1, round(r.width() * s)),
            max(1, round(r.height() * s)),
        )

    def mousePressEvent(self, e: QtGui.QMouseEvent) -> None:  # noqa: N802
        self._origin = e.position().toPoint()
        self._rect = QtCore.QRect(self._origin, self._origin)
        self.update()

    def mouseMoveEvent(self, e: QtGui.QMouseEvent) -> None:  # noqa: N802
        if self._origin is not None:
            self._rect = QtCore.QRect(self._origin, e.position().toPoint())
            self.update()

    def mouseReleaseEvent(self, e: QtGui.QMouseEvent) -> None:  # noqa: N802
        if self._origin is None:
            return
        self._rect = QtCore.QRect(self._origin, e.position().toPoint())
        self._origin = None
        if self._rect.normalized().width() > 4 and self._rect.normalized().height() > 4:
            self.chosen.emit(self.region())
        self.close()

    def keyPressEvent(self, e: QtGui.QKeyEvent) -> None:  # noqa: N802
        if e.key() == Qt.Key.Key_Escape:
            self.close()

    def paintEvent(self, e: QtGui.QPaintEvent) -> None:  # noqa: N802
        p = QtGui.QPainter(self)
        if not self.shot.isNull():
            p.drawPixmap(self.rect(), self.shot)
        else:
            p.fillRect(self.rect(), QtGui.QColor(40, 40, 40))
        p.fillRect(self.rect(), QtGui.QColor(0, 0, 0, 110))  # dimmed: the chosen region shows as it is
        p.setPen(QtGui.QColor(255, 255, 255))
        p.drawText(
            self.rect().adjusted(0, 20, 0, 0),
            Qt.AlignmentFlag.AlignHCenter,
            "Drag the region to capture; Esc cancels.",
        )
        if not self._rect.isNull():
            r = self._rect.normalized()
            if not self.shot.isNull():
                sx = self.shot.width() / max(1, self.width())
                sy = self.shot.height() / max(1, self.height())
                src = QtCore.QRectF(r.x() * sx, r.y() * sy, r.width() * sx, r.height() * sy)
                p.drawPixmap(QtCore.QRectF(r), self.shot, src)
            p.setPen(QtGui.QPen(QtGui.QColor(220, 30, 30), 2))
            p.drawRect(r)
        p.end()


def _say(label: QtWidgets.QLabel, text: str) -> None:
    """A note that may be cut short by a narrow window keeps its whole text in the tooltip."""
    label.setText(text)
    label.setToolTip(text)

"""The main window: source picker, live video, chat, controls, menus; the GUI side of one session.

Owns the user's flow: load the model in a worker (progress bar, never freezing), pick a source,
Start / Pause / Stop, ask (typing while the model speaks interrupts it: the engine does barge-in),
Esc stops the answer, export and reopen transcripts, settings, voice. It drains `session.poll()` from
a 20 ms timer and pulls `session.latest_frame()` from a 33 ms timer, both in the GUI thread; every
other thread (model loading, camera probing, stopping, the voice loop) reaches the window through
queued signals only. Errors a user can cause are shown in the window and the app keeps running.

It knows the engine only through `app.backend` (a `Backend` and `SessionLike`); no tensors. The model
controls and settings (`app.window_model`), past sessions and exports (`app.window_sessions`) and voice
(`app.window_voice`) are mixins of this class, each in its own module.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from app import desktop
from app.audio import Microphone, VoiceLoop
from app.backend import Backend, LoadedModel, SessionLike
from app.chat import ChatLog, ChatView
from app.messages import ErrorBanner, MessageLog, ModelNotice, show_log
from app.qt import Qt, QtGui, QTimer, QtWidgets, Signal
from app.sessions_dialog import EXPORTS
from app.settings import AppPaths, Settings
from app.source_picker import SourcePicker, spec_kind
from app.video import VideoView
from app.window_model import ModelControls
from app.window_sessions import SessionHistory
from app.window_voice import VoiceControls
from app.workers import Task
from engine import events as E

POLL_MS = 20  # event drain: tokens reach the log within 20 ms; the chat repaint is throttled separately
VIDEO_MS = 33  # ~30 Hz pull of the newest frame; a frame is converted only when it changed
STATUS_MS = 8000  # how long a transient status message stays


class MainWindow(ModelControls, SessionHistory, VoiceControls, QtWidgets.QMainWindow):
    session_state_changed = Signal(str)  # "idle", "running", "paused", "stopping"
    model_ready = Signal()

    def __init__(
        self,
        settings: Settings,
        paths: AppPaths,
        backend: Backend,
        settings_messages: list[str] | tuple[str, ...] = (),
        autoload: bool = True,
        probe_hardware: bool | None = None,
    ):
        super().__init__()
        self.setObjectName("main-window")
        self.setWindowTitle("MOSS Live")
        self.setAcceptDrops(True)
        self.resize(1200, 720)
        self.settings = settings
        self.paths = paths
        self.backend = backend
        self.model: LoadedModel | None = None
        self.session: SessionLike | None = None
        self.state = "idle"
        self.log = ChatLog()
        self.messages = MessageLog()  # every message of this run (View log)
        self.events: list[E.Event] = []  # the current (or opened past) session, for export
        self.viewing: Path | None = None  # the past transcript shown, if any
        self._pending_start: str | None = None
        self._load_task: Task | None = None
        self._stop_task: Task | None = None
        self._tasks: list[Task] = []
        self.voice: VoiceLoop | None = None
        self.microphone: Microphone | None = None
        self.tts: Any = None
        self.capture_note = ""
        self.mic_problem: str | None = None  # why push-to-talk cannot listen (no microphone)
        self._voice_task: Task | None = None  # the voice start-up in a worker
        self._voice_generation = 0
        self._ptt_key = desktop.key_from_text(settings.push_to_talk_key)

        self._build_ui()
        self._build_menus()
        self._build_shortcuts()
        self._apply_look()
        self.picker.restore_screen(settings.screen_monitor, settings.screen_region)
        self.picker.set_spec(settings.last_source or "demo")

        self.poll_timer = QTimer(self)
        self.poll_timer.setObjectName("session-poll")
        self.poll_timer.setInterval(POLL_MS)
        self.poll_timer.timeout.connect(self.poll)
        self.video_timer = QTimer(self)
        self.video_timer.setObjectName("video-pull")
        self.video_timer.setInterval(VIDEO_MS)
        self.video_timer.timeout.connect(self._pull_frame)

        for m in settings_messages:
            self.log.add_note(m, kind="error")
        if settings_messages:
            self.show_status(settings_messages[0], error=True)
        self._note_past_sessions()
        if probe_hardware if probe_hardware is not None else not settings.first_run_done:
            self._first_run_report()
        self.chat.changed()
        self._update_controls()
        if autoload:
            self.load_model()
        if settings.voice:
            self.start_voice()

    # ---- layout -----------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.picker = SourcePicker()
        self.picker.region_note.connect(lambda n: self.show_status(n))
        self.picker.changed.connect(self._on_source_changed)
        self.start_btn = self._button("Start", "Start watching the source", self.start)
        self.pause_btn = self._button("Pause", "Pause or resume", self.toggle_pause)
        self.stop_btn = self._button("Stop", "Stop the session", self.stop)
        self.capture_dot = QtWidgets.QLabel()
        self.capture_dot.setObjectName("capture-indicator")
        self.capture_dot.setAccessibleName("Capture indicator")
        # its words may be cut in a narrow window; the dot's colour and the tooltip stay
        self.capture_dot.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred
        )
        self.capture_dot.setMinimumWidth(16)
        self.capture_dot.setMaximumWidth(110)

        top = QtWidgets.QWidget()
        tl = QtWidgets.QHBoxLayout(top)
        tl.setContentsMargins(8, 6, 8, 6)
        tl.addWidget(self.picker, 1)
        for w in (self.start_btn, self.pause_btn, self.stop_btn, self.capture_dot):
            tl.addWidget(w)

        self.video = VideoView()
        self.chat = ChatView(self.log)
        self.watching = QtWidgets.QLabel("◌ watching…")
        self.watching.setObjectName("watching")
        self.watching.setAccessibleName("The model is watching")
        self.watching.setVisible(False)
        self.input = QtWidgets.QLineEdit()
        self.input.setObjectName("question")
        self.input.setPlaceholderText("Ask about what the model sees (Enter sends, Esc stops the answer)")
        self.input.setAccessibleName("Question")
        self.input.returnPressed.connect(self.send_typed)
        self.send_btn = self._button("Send", "Send the question", self.send_typed)
        self.mic_btn = QtWidgets.QToolButton()
        self.mic_btn.setText("Talk")
        self.mic_btn.setAccessibleName("Hold to talk")
        self.mic_btn.setToolTip(f"Hold to talk ({self.settings.push_to_talk_key})")
        self.mic_btn.pressed.connect(self.push_to_talk_down)
        self.mic_btn.released.connect(self.push_to_talk_up)

        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.input, 1)
        row.addWidget(self.mic_btn)
        row.addWidget(self.send_btn)
        right = QtWidgets.QWidget()
        rl = QtWidgets.QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.chat, 1)
        rl.addWidget(self.watching)
        rl.addLayout(row)

        split = QtWidgets.QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.video)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([700, 480])

        self.banner = ErrorBanner()
        self.banner.log_btn.clicked.connect(self.show_messages)
        self.notice = ModelNotice()
        self.notice.choose_btn.clicked.connect(self.choose_checkpoint)
        central = QtWidgets.QWidget()
        cl = QtWidgets.QVBoxLayout(central)
        cl.setContentsMargins(0, 0, 8, 0)
        cl.addWidget(top)
        cl.addWidget(self.banner)
        cl.addWidget(self.notice)
        cl.addWidget(split, 1)
        self.setCentralWidget(central)

        self.progress = QtWidgets.QProgressBar()
        self.progress.setObjectName("load-progress")
        self.progress.setAccessibleName("Model loading progress")
        self.progress.setMaximumWidth(220)
        self.progress.setVisible(False)
        self.model_label = QtWidgets.QLabel("No model loaded")
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.model_label)

    def _button(self, text: str, name: str, slot: Any) -> QtWidgets.QPushButton:
        b = QtWidgets.QPushButton(text)
        b.setAccessibleName(name)
        b.setToolTip(name)
        b.clicked.connect(slot)
        return b

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file = bar.addMenu("&File")
        file.addAction("Open a video file…", self.open_video_file)
        export = file.addMenu("Export transcript")
        for key, (label, _) in EXPORTS.items():
            export.addAction(f"{label}…", lambda k=key: self.export_dialog(k))
        folders = file.addMenu("Open folder")
        for label, attr in (
            ("Settings", "config"),
            ("Sessions", "sessions"),
            ("Models", "models"),
            ("Logs", "logs"),
        ):
            folders.addAction(label, lambda a=attr: self.open_folder(getattr(self.paths, a)))
        file.addSeparator()
        file.addAction("Quit", QtGui.QKeySequence.StandardKey.Quit, self.close)
        self.sessions_menu = bar.addMenu("&Sessions")
        self.sessions_menu.aboutToShow.connect(self._fill_sessions_menu)
        self._fill_sessions_menu()
        edit = bar.addMenu("&Edit")
        self.settings_action = edit.addAction("Settings…")
        self.settings_action.setShortcuts(
            [QtGui.QKeySequence("Ctrl+,"), QtGui.QKeySequence.StandardKey.Preferences]
        )
        self.settings_action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        self.settings_action.triggered.connect(self.open_settings)
        self.addAction(self.settings_action)
        view = bar.addMenu("&View")
        view.addAction("Messages of this run…", self.show_messages)
        help_ = bar.addMenu("&Help")
        help_.addAction("Models: what fits, download and use…", self.show_catalogue)
        help_.addAction("Hardware and models…", self._first_run_report)
        help_.addAction("Voice status…", self._voice_report)

    def _build_shortcuts(self) -> None:
        esc = QtGui.QShortcut(QtGui.QKeySequence(Qt.Key.Key_Escape), self)
        esc.setContext(Qt.ShortcutContext.WindowShortcut)
        esc.activated.connect(self.stop_answer)
        self.esc_shortcut = esc

    def _apply_look(self) -> None:
        desktop.apply_look(QtWidgets.QApplication.instance(), self.settings.theme, self.settings.font_size)
        pal = self.palette()
        muted = desktop.readable(
            pal.color(QtGui.QPalette.ColorRole.PlaceholderText), pal.color(QtGui.QPalette.ColorRole.Window)
        )
        self.watching.setStyleSheet(f"color: {muted.name()}; font-style: italic;")
        self.chat.set_log(self.log)

    # ---- status -----------------------------------------------------------------------------------
    def show_status(self, text: str, error: bool = False) -> None:
        self.statusBar().setStyleSheet("color: #d13438" if error else "")
        self.statusBar().showMessage(text, STATUS_MS * (2 if error else 1))
        self.messages.add(text, error)
        if error:  # the whole message, selectable, until the next good start or the user dismisses it
            self.banner.show_error(text)

    def show_error(self, text: str) -> None:
        """A user-facing problem: the banner, the status bar and an inline note in the chat."""
        self.show_status(text, error=True)
        self.log.add_note(text, kind="error")

    def clear_error(self) -> None:
        """A good start: the red state of an earlier problem goes (the log keeps it)."""
        self.banner.clear()
        self.statusBar().setStyleSheet("")
        self.statusBar().clearMessage()

    def show_messages(self) -> QtWidgets.QDialog:
        return show_log(self, self.messages)

    def _update_controls(self) -> None:
        st = self.state
        live = st in ("running", "paused")
        self.start_btn.setEnabled(st == "idle")
        self.pause_btn.setEnabled(live)
        self.pause_btn.setText("Resume" if st == "paused" else "Pause")
        self.stop_btn.setEnabled(live)
        self.picker.setEnabled(st == "idle")
        if st == "running":
            self.capture_dot.setText("<span style='color:#dc1e1e'>●</span> Capturing")
            self.capture_dot.setToolTip("The source is being captured and watched by the model")
        elif st == "paused":
            self.capture_dot.setText("<span style='color:#888'>●</span> Paused")
            self.capture_dot.setToolTip("Capture is paused")
        elif st == "stopping":
            self.capture_dot.setText("Stopping…")
        else:
            self.capture_dot.setText("")
        self.capture_dot.setVisible(st != "idle")
        self.video.set_capturing(st == "running")
        self.watching.setVisible(st == "running" and self.log.silent and not self.log.speaking)

    def _set_state(self, st: str) -> None:
        self.state = st
        self._update_controls()
        self.session_state_changed.emit(st)

    # ---- files ------------------------------------------------------------------------------------
    def open_video_file(self) -> None:
        """File > Open: pick a video and start watching it (stopping a session that runs)."""
        if self.picker.choose_file():
            self.open_file(self.picker.spec())

    def raise_for(self, spec: str = "") -> None:
        """A second launch asked for this window (and maybe a source)."""
        desktop.bring_to_front(self)
        if spec:
            self.open_file(spec)

    def open_folder(self, path: Path) -> bool:
        if desktop.open_folder(path):
            self.show_status(f"Opened {path}")
            return True
        # No file manager to ask (a bare X server, a container): say where it is, selectable.
        self.show_error(f"No file manager could be opened here; the folder is {path}")
        return False

    # ---- session ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self.state != "idle":
            return
        try:
            spec = self.picker.spec()
        except ValueError as e:
            self.show_error(str(e))
            return
        if self.model is None:
            self._pending_start = spec
            self.show_status("Starting as soon as the model is loaded…")
            if self._load_task is None or self._load_task.finished:
                self.load_model()
            return
        self._start_session(spec)

    def start_source(self, spec: str) -> None:
        """Start on `spec` directly (command line, drag-and-drop, tests)."""
        self.picker.set_spec(spec)
        self.start()

    def _start_session(self, spec: str) -> None:
        session = None
        try:
            session = self.backend.new_session(self.model, self.settings, self.paths.sessions)
            session.start(spec)  # returns at once; source failures arrive later as Error events
        except (ValueError, RuntimeError, OSError) as e:  # e.g. a system prompt longer than the context
            if session is not None:
                with contextlib.suppress(Exception):
                    session.stop(timeout=1.0)
            self.show_error(f"The session could not start: {e}")
            return
        self.session = session
        self.log = ChatLog()
        self.chat.set_log(self.log)
        self.events = []
        self.viewing = None
        self.video.clear("Opening the source…")
        self._remember_source(spec)
        if spec_kind(spec) == "screen" and self.capture_note and "hidden" not in self.capture_note:
            self.show_status(self.capture_note)
        self._set_state("running")
        self.poll_timer.start()
        self.video_timer.start()

    def _remember_source(self, spec: str) -> None:
        monitor, region = self.picker.screen_choice()
        changes: dict[str, Any] = {"last_source": spec}
        if spec_kind(spec) == "screen":
            changes.update(screen_monitor=monitor, screen_region=region)
        new = self.settings.replace(**changes)
        if new != self.settings:
            self.settings = new
            self._save_settings()

    def ask(self, text: str, via: str = "typed") -> bool:
        """Send a question; a question while the model speaks interrupts it (the engine's barge-in)."""
        text = text.strip()
        if not text:
            return False
        if self.session is None or self.state not in ("running", "paused"):
            self.show_status("Start a source first: questions are about what the model sees.", error=True)
            return False
        if self.tts is not None:
            self.tts.stop()
        self.log.add_question(text, via=via)
        self.chat.changed()
        self.session.ask(text)
        return True

    def send_typed(self) -> None:
        if self.ask(self.input.text()):
            self.input.clear()

    def stop_answer(self) -> None:
        """Esc: the assistant stops talking now and goes back to watching."""
        if self.tts is not None:
            self.tts.stop()
        if self.session is not None and self.state in ("running", "paused"):
            self.session.stop_answer()

    def toggle_pause(self) -> None:
        if self.session is None:
            return
        if self.state == "running":
            self.session.pause()
            self._set_state("paused")
        elif self.state == "paused":
            self.session.resume()
            self._set_state("running")

    def stop(self) -> None:
        """Stop the session in a worker (Session.stop joins threads for up to a second)."""
        if self.session is None or self.state in ("idle", "stopping"):
            return
        self._set_state("stopping")
        session = self.session
        self._stop_task = Task("session-stop", lambda report: session.stop(timeout=1.0), self)
        self._stop_task.connect(lambda _: self._stopped(session), lambda m: self._stopped(session)).start()

    def _stopped(self, session: SessionLike) -> None:
        if session is not self.session:
            return
        self.poll()  # the last events (SessionEnd) arrive before we let go of the session
        self.poll_timer.stop()
        self.video_timer.stop()
        self.session = None
        self.chat.flush()
        self._set_state("idle")
        if self._pending_start is not None:
            spec, self._pending_start = self._pending_start, None
            self.start_source(spec)

    def poll(self) -> None:
        """Drain the session's events into the chat, the video overlay and the status bar."""
        s = self.session
        if s is None:
            return
        evs = s.poll()
        if not evs:
            return
        ended = False
        for ev in evs:
            self.events.append(ev)
            self.log.apply(ev)
            kind = ev.kind
            if kind == "FrameSeen":
                if ev.index == 0:  # the source works: an earlier problem's red state goes
                    self.clear_error()
                self.video.mark_frame_seen(ev.index)
            elif kind == "Stats":
                self.video.set_stats(ev)
            elif kind == "Error":
                self.show_status(ev.message, error=True)
                if ev.where == "source" and not self._frames_seen():
                    self.video.clear(f"The source could not be opened.\n{ev.message}")
            elif kind == "SpeechEnd":
                if self.tts is not None and self.settings.speak_answers and not ev.interrupted and ev.text:
                    self.tts.speak(ev.text)
            elif kind == "SessionEnd":
                ended = True
        self.chat.changed()
        self.watching.setVisible(self.state == "running" and self.log.silent and not self.log.speaking)
        if ended:
            self._drop_empty_transcript()
        if ended and self.state in ("running", "paused"):
            self.stop()  # joins the engine's threads in a worker; the window is usable again after

    def _frames_seen(self) -> bool:
        return any(e.kind == "FrameSeen" for e in self.events)

    def _drop_empty_transcript(self) -> None:
        """A session that never saw a frame nor heard a question (the source failed to open) leaves
        no empty 0:00 session in the history: its transcript, which this app wrote, is removed."""
        path = getattr(self.session, "transcript_path", None)
        asked = any(e.kind == "TurnStart" and e.turn > 0 for e in self.events)
        if path is None or self._frames_seen() or asked:
            return
        try:
            Path(path).unlink(missing_ok=True)
        except OSError:
            pass

    def _pull_frame(self) -> None:
        if self.session is not None:
            self.video.set_frame(self.session.latest_frame())

    def _on_source_changed(self) -> None:
        try:
            if (
                spec_kind(self.picker.spec()) == "screen"
                and self.capture_note
                and "hidden" not in self.capture_note
            ):
                self.show_status(self.capture_note)
        except ValueError:
            pass

    def dragEnterEvent(self, e: QtGui.QDragEnterEvent) -> None:  # noqa: N802
        if e.mimeData().hasUrls() and any(u.isLocalFile() for u in e.mimeData().urls()):
            e.acceptProposedAction()

    def dropEvent(self, e: QtGui.QDropEvent) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in e.mimeData().urls() if u.isLocalFile()]
        if paths:
            e.acceptProposedAction()
            self.open_file(paths[0])

    def open_file(self, path: str) -> None:
        """A dropped or chosen file: start on it now (after stopping what runs)."""
        if self.state in ("running", "paused", "stopping"):
            self._pending_start = path
            self.stop()
            return
        self.start_source(path)

    # ---- window -----------------------------------------------------------------------------------
    def showEvent(self, e: QtGui.QShowEvent) -> None:  # noqa: N802
        super().showEvent(e)
        if not self.capture_note:
            _, self.capture_note = desktop.exclude_from_capture(self)

    def closeEvent(self, e: QtGui.QCloseEvent) -> None:  # noqa: N802
        self.shutdown()
        super().closeEvent(e)

    def shutdown(self) -> None:
        """Stop everything we started: session (joined, within a second), voice, timers."""
        self.poll_timer.stop()
        self.video_timer.stop()
        if self._load_task is not None:
            self._load_task.cancelled = True
        s, self.session = self.session, None
        if s is not None:
            s.stop(timeout=1.0)
        if self._stop_task is not None:
            self._stop_task.join(1.5)
        self.stop_voice()
        self.state = "idle"

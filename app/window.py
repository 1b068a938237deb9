"""The main window: source picker, live video, chat, controls, menus; the GUI side of one session.

Owns the user's flow: load the model in a worker (progress bar, never freezing), pick a source,
Start / Pause / Stop, ask (typing while the model speaks interrupts it: the engine does barge-in),
Esc stops the answer, export and reopen transcripts, settings, voice. It drains `session.poll()` from
a 20 ms timer and pulls `session.latest_frame()` from a 33 ms timer, both in the GUI thread; every
other thread (model loading, camera probing, stopping, the voice loop) reaches the window through
queued signals only. Errors a user can cause are shown in the window and the app keeps running.

It knows the engine only through `app.backend` (a `Backend` and `SessionLike`); no tensors.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from app import desktop
from app.audio import AudioRing, Microphone, VoiceLoop, VoiceUnavailable, make_tts, make_vad
from app.backend import Backend, LoadedModel, SessionLike
from app.chat import ChatLog, ChatView
from app.messages import ErrorBanner, MessageLog, ModelNotice, show_log
from app.qt import QObject, Qt, QtCore, QtGui, QTimer, QtWidgets, Signal
from app.recognizer_process import RecognizerProcess
from app.settings import AppPaths, Settings, save_settings
from app.settings_dialog import SettingsDialog
from app.source_picker import SourcePicker, spec_kind
from app.video import VideoView
from app.workers import Task
from engine import events as E

POLL_MS = 20  # event drain: tokens reach the log within 20 ms; the chat repaint is throttled separately
VIDEO_MS = 33  # ~30 Hz pull of the newest frame; a frame is converted only when it changed
STATUS_MS = 8000  # how long a transient status message stays
EXPORTS = {
    "srt": ("SRT subtitles", "*.srt"),
    "vtt": ("WebVTT subtitles", "*.vtt"),
    "md": ("Markdown", "*.md"),
}


class VoiceSignals(QObject):
    """The voice thread's callbacks as signals (queued into the GUI thread)."""

    speech_started = Signal()
    text = Signal(str)
    error = Signal(str)


class MainWindow(QtWidgets.QMainWindow):
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
        self.input.returnPressed.connect(self._send_typed)
        self.send_btn = self._button("Send", "Send the question", self._send_typed)
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
        self.chat.changed()

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

    # ---- model ------------------------------------------------------------------------------------
    def load_model(self) -> None:
        if self._load_task is not None and not self._load_task.finished:
            self._load_task.cancelled = True  # settings changed mid-load: its result is not wanted
        self.model = None
        settings = self.settings
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.model_label.setText("Loading the model…")
        self._load_task = Task("model-loader", lambda report: self.backend.load(settings, report), self)
        self._load_task.connect(self._model_loaded, self._model_failed, self._load_progress).start()

    def _load_progress(self, fraction: float, text: str) -> None:
        if fraction < 0:
            self.progress.setRange(0, 0)  # busy: the size is unknown
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(fraction * 1000))
        self.progress.setFormat(text[:60])
        self.model_label.setText(text)

    def _model_loaded(self, model: LoadedModel) -> None:
        self.model = model
        self.progress.setVisible(False)
        bundled = not self.settings.model and model.trained
        name = "bundled demo model (a world of shapes only)" if bundled else model.name
        self.model_label.setText(f"Model: {name} ({model.device})")
        self.model_label.setToolTip(self.notice.label.text() if bundled else model.name)
        self.notice.show_for(bundled)
        if not model.trained:
            self.show_status("No trained model is bundled: an untrained stand-in answers with noise.")
        self.model_ready.emit()
        if self._pending_start is not None and self.state == "idle":
            spec, self._pending_start = self._pending_start, None
            self._start_session(spec)

    def open_video_file(self) -> None:
        """File > Open: pick a video and start watching it (stopping a session that runs)."""
        if self.picker.choose_file():
            self._restart_on(self.picker.spec())

    def _restart_on(self, spec: str) -> None:
        if self.state in ("running", "paused"):
            self._pending_start = spec
            self.stop()  # the pending start follows when the session has stopped
        else:
            self.start_source(spec)

    def raise_for(self, spec: str = "") -> None:
        """A second launch asked for this window (and maybe a source)."""
        desktop.bring_to_front(self)
        if spec:
            self._restart_on(spec)

    def open_folder(self, path: Path) -> bool:
        if desktop.open_folder(path):
            self.show_status(f"Opened {path}")
            return True
        # No file manager to ask (a bare X server, a container): say where it is, selectable.
        self.show_error(f"No file manager could be opened here; the folder is {path}")
        return False

    def choose_checkpoint(self) -> str | None:
        """Pick a checkpoint folder (config.json + safetensors) and load it now."""
        folder = QtWidgets.QFileDialog.getExistingDirectory(
            self, "Choose a model checkpoint folder (config.json + safetensors)", str(self.paths.models)
        )
        if folder:
            self.apply_settings(self.settings.replace(model=folder))
        return folder or None

    def _model_failed(self, message: str) -> None:
        self.progress.setVisible(False)
        self.model_label.setText("No model loaded")
        self._pending_start = None
        self.show_error(f"The model could not be loaded: {message} Change it in Settings (Ctrl+,).")

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

    def _send_typed(self) -> None:
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

    # ---- files ------------------------------------------------------------------------------------
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

    # ---- transcripts ------------------------------------------------------------------------------
    def _note_past_sessions(self) -> None:
        n = len(self._past_sessions())
        if n:
            self.log.add_note(f"{n} past session{'s' if n != 1 else ''}: see the Sessions menu.")

    def _past_sessions(self) -> list[Any]:
        try:
            from engine.transcript import list_sessions

            return list_sessions(self.paths.sessions)
        except (ImportError, OSError):
            return []

    def _fill_sessions_menu(self) -> None:
        m = self.sessions_menu
        m.clear()
        infos = self._past_sessions()
        if not infos:
            a = m.addAction("No past sessions yet")
            a.setEnabled(False)
        for info in infos[:25]:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.started_at))
            mins, secs = divmod(int(info.duration), 60)
            q = f"{info.questions} question{'s' if info.questions != 1 else ''}"
            flag = "" if info.complete else " (cut off)"
            label = f"{when}  {info.source or '?'}  ·  {q}  ·  {mins}:{secs:02d}{flag}"
            m.addAction(label, lambda p=info.path: self.open_past_session(p))
        m.addSeparator()
        m.addAction("Open the sessions folder", lambda: desktop.open_folder(self.paths.sessions))

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
        from engine import transcript as T

        if not self.events:
            raise ValueError("There is no session to export yet.")
        text = {"srt": T.to_srt, "vtt": T.to_webvtt, "md": T.to_markdown}[fmt](self.events)
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(21, "it is a folder", str(path))
        T.write_text_atomic(path, text)  # a full disk never leaves half a file where the old one was
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

    # ---- settings ---------------------------------------------------------------------------------
    def open_settings(self) -> SettingsDialog:
        dlg = SettingsDialog(self.settings, self)
        dlg.accepted.connect(lambda: self.apply_settings(dlg.result_settings))
        dlg.open()  # window-modal, but never blocks the event loop (the session keeps streaming)
        self.settings_dialog = dlg
        return dlg

    def apply_settings(self, new: Settings | None) -> None:
        if new is None:
            return
        old, self.settings = self.settings, new
        self._save_settings()
        self._apply_look()
        self._ptt_key = desktop.key_from_text(new.push_to_talk_key)
        self.mic_btn.setToolTip(f"Hold to talk ({new.push_to_talk_key})")
        model_keys = ("model", "device", "dtype", "local_only", "mode")
        if any(getattr(old, k) != getattr(new, k) for k in model_keys):
            if self.state == "idle":
                self.load_model()
            else:
                self.model = None
                self.show_status("The new model loads when you start the next session.")
        voice_keys = ("voice", "always_listen", "recognizer", "whisper_model", "tts", "speak_answers")
        if any(getattr(old, k) != getattr(new, k) for k in voice_keys):
            self.stop_voice()
            if new.voice:
                self.start_voice()
        elif new.speak_answers and self.tts is None:
            self._make_tts()
        if self.state != "idle" and any(
            getattr(old, k) != getattr(new, k)
            for k in ("fps", "memory_frames", "max_context", "system_prompt", "decoding", "temperature")
        ):
            self.show_status("Frame rate, memory, prompt and decoding changes apply to the next session.")

    def _save_settings(self) -> None:
        try:
            save_settings(self.settings, self.paths.settings_file)
        except OSError as e:
            self.show_status(f"Settings could not be saved ({e.strerror or e}).", error=True)

    # ---- first run --------------------------------------------------------------------------------
    def _first_run_report(self) -> None:
        def work(report: Any) -> str:
            from app.hardware import probe
            from app.hardware import report as describe

            return describe(probe())

        task = Task("hardware-probe", work, self)
        task.connect(self._show_hardware, lambda m: self.show_status(f"Hardware check failed: {m}"))
        self._tasks.append(task)
        task.start()

    def _show_hardware(self, text: str) -> None:
        self.hardware_report = text
        self.log.add_note("Hardware check:\n" + text)
        self.chat.changed()
        if not self.settings.first_run_done:
            self.settings = self.settings.replace(first_run_done=True)
            self._save_settings()

    # ---- voice ------------------------------------------------------------------------------------
    def start_voice(
        self,
        ring: AudioRing | None = None,
        vad: Any = None,
        recognizer: Any = None,
        background: bool | None = None,
    ) -> list[str]:
        """Open the microphone (unless `ring` is given: tests feed it) and start the voice thread.

        Opening the device and loading the recogniser and VAD take up to a second, so with a real
        microphone (no `ring`) that runs in a worker while the Talk button shows a busy state; the
        voice loop starts when they are ready (`voice_ready`). Returns what is missing so far (also
        shown in the status bar); the app works without any of it.
        """
        self.stop_voice()
        self.mic_problem = None
        settings = self.settings
        generation = self._voice_generation

        def prepare(report: Any) -> tuple:
            missing: list[str] = []
            mic, problem, the_ring = None, None, ring
            if the_ring is None:
                the_ring = AudioRing()
                mic = Microphone(the_ring)
                try:
                    mic.open()
                except VoiceUnavailable as e:
                    missing.append(str(e))
                    mic, problem = None, str(e)
            rec = recognizer
            if rec is None:
                try:  # in its own process: pocketsphinx would hold the GIL, freezing the window
                    rec = RecognizerProcess(settings.recognizer, settings.whisper_model)
                except VoiceUnavailable as e:
                    missing.append(str(e))
            tts = None
            if settings.speak_answers:
                try:
                    tts = make_tts(settings.tts)
                except VoiceUnavailable as e:
                    missing.append(str(e))
            return generation, the_ring, mic, problem, rec, vad or make_vad(), tts, missing

        if background if background is not None else ring is None:
            self.mic_btn.setEnabled(False)
            self.mic_btn.setText("…")
            self.mic_btn.setToolTip("Voice is starting…")
            self.show_status("Starting voice (microphone, speech recogniser)…")
            self._voice_task = Task("voice-start", prepare, self)
            self._voice_task.connect(self._voice_prepared, self._voice_failed).start()
            self.voice_missing = []
            return []
        return self._voice_prepared(prepare(None))

    def _voice_prepared(self, parts: tuple) -> list[str]:
        generation, ring, mic, problem, recognizer, vad, tts, missing = parts
        if generation != self._voice_generation:  # voice was switched off (or on again) meanwhile
            if mic is not None:
                mic.close()
            return []
        self._voice_task = None
        self.microphone, self.mic_problem = mic, problem
        if tts is not None:
            self.tts = tts
        self._voice_signals = VoiceSignals(self)
        q = Qt.ConnectionType.QueuedConnection
        self._voice_signals.speech_started.connect(self._user_started_speaking, q)
        self._voice_signals.text.connect(lambda t: self.ask(t, via="voice"), q)
        self._voice_signals.error.connect(lambda m: self.show_status(m, error=True), q)
        sig = self._voice_signals
        # The push-to-talk key must work whichever child has focus, so the filter sits on the app;
        # only while voice is on, since every event of the app then passes through Python.
        QtWidgets.QApplication.instance().installEventFilter(self)
        self.voice = VoiceLoop(
            ring,
            vad,
            recognizer,
            on_text=sig.text.emit,
            on_speech_start=sig.speech_started.emit,
            on_error=sig.error.emit,
            always_listen=self.settings.always_listen,
        ).start()
        self.mic_btn.setEnabled(True)
        self.mic_btn.setText("Talk")
        self.mic_btn.setToolTip(f"Hold to talk ({self.settings.push_to_talk_key})")
        if missing:
            self.show_status("Voice: " + " ".join(missing), error=True)
        else:
            self.show_status("Voice is on.")
        self.voice_missing = missing
        return missing

    def _voice_failed(self, message: str) -> None:
        self._voice_task = None
        self.mic_btn.setEnabled(True)
        self.mic_btn.setText("Talk")
        self.show_status(f"Voice could not start: {message}", error=True)

    def _make_tts(self) -> list[str]:
        try:
            self.tts = make_tts(self.settings.tts)
            return []
        except VoiceUnavailable as e:
            self.tts = None
            return [str(e)]

    def stop_voice(self) -> None:
        self._voice_generation += 1  # a voice start still under way: its result is not wanted
        if self._voice_task is not None:
            self._voice_task.cancelled = True
            self._voice_task = None
            self.mic_btn.setEnabled(True)
            self.mic_btn.setText("Talk")
        QtWidgets.QApplication.instance().removeEventFilter(self)
        if self.voice is not None:
            self.voice.stop()
            close = getattr(self.voice.recognizer, "close", None)
            if close is not None:
                close()  # ends the recogniser's process
            self.voice = None
        if self.microphone is not None:
            self.microphone.close()
            self.microphone = None
        if self.tts is not None:
            self.tts.stop()
            self.tts = None

    def _user_started_speaking(self) -> None:
        """Voice barge-in: while the user speaks, the assistant stops talking."""
        if self.tts is not None:
            self.tts.stop()
        if self.log.speaking:
            self.stop_answer()

    def push_to_talk_down(self) -> None:
        if self.voice is None:
            self.show_status("Voice is off: switch it on in Settings (Ctrl+,).", error=True)
            return
        if self.mic_problem:
            self.show_status(f"Cannot listen: {self.mic_problem}", error=True)
            return
        self.voice.ptt_down()
        self.mic_btn.setDown(True)

    def push_to_talk_up(self) -> None:
        if self.voice is not None:
            self.voice.ptt_up()
        self.mic_btn.setDown(False)

    def eventFilter(self, obj: QObject, e: QtCore.QEvent) -> bool:  # noqa: N802
        t = e.type()
        if t in (QtCore.QEvent.Type.KeyPress, QtCore.QEvent.Type.KeyRelease) and self.isActiveWindow():
            ke: QtGui.QKeyEvent = e  # type: ignore[assignment]
            if (
                not ke.isAutoRepeat()
                and not self._ptt_key.isEmpty()
                and ke.keyCombination() == self._ptt_key[0]
            ):
                if t == QtCore.QEvent.Type.KeyPress:
                    self.push_to_talk_down()
                else:
                    self.push_to_talk_up()
                return True
        return super().eventFilter(obj, e)

    def _voice_report(self) -> None:
        from app.audio import check_voice

        s = self.settings
        st = check_voice(s.recognizer, s.whisper_model, s.tts)
        box = QtWidgets.QMessageBox(
            QtWidgets.QMessageBox.Icon.Information, "Voice", st.summary(), parent=self
        )
        box.open()

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

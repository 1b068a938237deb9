"""Voice in the window: the microphone, push-to-talk, voice-activity barge-in, spoken answers.

A mixin of `app.window.MainWindow` (it uses the window's status bar, log and session); the slow parts
(opening the device, loading the recogniser) run in a worker, the recogniser in its own process.
"""

from __future__ import annotations

from typing import Any

from app.audio import AudioRing, Microphone, VoiceLoop, VoiceUnavailable, make_tts, make_vad
from app.qt import QObject, Qt, QtCore, QtGui, QtWidgets, Signal
from app.recognizer_process import RecognizerProcess
from app.workers import Task


class VoiceSignals(QObject):
    """The voice thread's callbacks as signals (queued into the GUI thread)."""

    speech_started = Signal()
    text = Signal(str)
    error = Signal(str)


class VoiceControls:
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
        voice loop starts when they are ready (`_voice_prepared`). Returns what is missing so far (also
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
                tts, why = _tts(settings.tts)
                missing += why
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
            close = getattr(recognizer, "close", None)
            if close is not None:
                close()  # ends the recogniser's process
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
        self._talk_button_ready()
        if missing:
            self.show_status("Voice: " + " ".join(missing), error=True)
        else:
            self.show_status("Voice is on.")
        self.voice_missing = missing
        return missing

    def _voice_failed(self, message: str) -> None:
        self._voice_task = None
        self._talk_button_ready()
        self.show_status(f"Voice could not start: {message}", error=True)

    def _talk_button_ready(self) -> None:
        self.mic_btn.setEnabled(True)
        self.mic_btn.setText("Talk")
        self.mic_btn.setToolTip(f"Hold to talk ({self.settings.push_to_talk_key})")

    def _make_tts(self) -> list[str]:
        self.tts, missing = _tts(self.settings.tts)
        return missing

    def stop_voice(self) -> None:
        self._voice_generation += 1  # a voice start still under way: its result is not wanted
        if self._voice_task is not None:
            self._voice_task.cancelled = True
            self._voice_task = None
            self._talk_button_ready()
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


def _tts(choice: str) -> tuple[Any, list[str]]:
    """The text-to-speech engine of a setting, or None and why not."""
    try:
        return make_tts(choice), []
    except VoiceUnavailable as e:
        return None, [str(e)]

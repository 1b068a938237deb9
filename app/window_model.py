"""The model in the window: loading it in a worker with progress, what it can see (the notice for the
bundled model), choosing a real checkpoint, the settings dialog and the first-run machine check. A
mixin of `app.window.MainWindow`.
"""

from __future__ import annotations

from typing import Any

from app import desktop
from app.backend import LoadedModel
from app.qt import QtWidgets
from app.settings import Settings, save_settings
from app.settings_dialog import SettingsDialog
from app.workers import Task


class ModelControls:
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

    def show_catalogue(self):
        """Models: what each needs, whether it fits here, download and use (Help > Models…)."""
        from app.catalog_dialog import CatalogDialog
        from app.hardware import probe

        dlg = CatalogDialog(self)
        dlg.open()

        def show_fit(hw) -> None:  # the machine check asks the GPU driver: in a worker, not the UI thread
            dlg.hardware = hw
            dlg.fill()

        task = Task("hardware-probe", lambda report: probe(), self)
        task.connect(show_fit)  # a failed check leaves "-": the catalogue works without it
        self._tasks.append(task)
        task.start()
        return dlg

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

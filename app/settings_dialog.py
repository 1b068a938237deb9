"""The settings dialog (Ctrl+,): edit a `Settings`, validated by the same rules as the YAML file.

Owns the form only. It returns a new `Settings` (or None when cancelled); saving and applying are the
window's job. Invalid input (e.g. a device name) is reported inline and the dialog stays open.
It knows nothing of the engine.
"""

from __future__ import annotations

from app.qt import QtCore, QtGui, QtWidgets
from app.settings import Settings, to_dict, validate
from engine.options import CHOICES


def _combo(options: tuple[str, ...], name: str, editable: bool = False) -> QtWidgets.QComboBox:
    c = QtWidgets.QComboBox()
    c.addItems(list(options))
    c.setEditable(editable)
    c.setAccessibleName(name)
    return c


class SettingsDialog(QtWidgets.QDialog):
    def __init__(self, settings: Settings, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("settings-dialog")
        self.setWindowTitle("Settings")
        self._base = settings
        self.result_settings: Settings | None = None

        self.model = QtWidgets.QLineEdit()
        self.model.setPlaceholderText("empty = the bundled model; or a folder, or a hub id like org/name")
        self.model.setAccessibleName("Model folder or hub id")
        browse = QtWidgets.QPushButton("Folder…")
        browse.setAccessibleName("Choose a model folder")
        browse.clicked.connect(self._choose_model)
        model_row = QtWidgets.QHBoxLayout()
        model_row.addWidget(self.model, 1)
        model_row.addWidget(browse)
        self.device = _combo(("auto", "cpu", "cuda", "mps"), "Device", editable=True)
        self.dtype = _combo(("auto", "float32", "bfloat16", "float16", "int8"), "Precision")
        self.fps = QtWidgets.QDoubleSpinBox()
        self.fps.setRange(0.1, 30.0)
        self.fps.setSingleStep(0.5)
        self.fps.setDecimals(1)
        self.fps.setAccessibleName("Frames per second into the model")
        self.memory = QtWidgets.QSpinBox()
        self.memory.setRange(1, 4096)
        self.memory.setAccessibleName("Visual memory in frames")
        self.context = QtWidgets.QSpinBox()
        self.context.setRange(256, 131072)
        self.context.setSingleStep(256)
        self.context.setAccessibleName("Text context in tokens")
        self.mode = _combo(("auto", "moss", "stock"), "Run the checkpoint as")
        self.mode.setToolTip(
            "auto: what the checkpoint's config.json says (MOSS-Video-Preview or stock Llama-3.2-Vision)"
        )
        self.decoding = _combo(("auto", "greedy", "sample"), "Decoding")
        self.decoding.setToolTip(
            "auto: what the checkpoint's authors use (its generation_config.json; greedy without one)"
        )
        self.decode_step = _combo(CHOICES["decode_step"], "Decode step")
        self.decode_step.setToolTip(
            "auto: a CUDA graph on a GPU, the folded CPU step for a float32 model on a CPU; "
            "static, cpu or eager force one"
        )
        self.cpu_weights = _combo(CHOICES["cpu_weights"], "CPU step weights")
        self.cpu_weights.setToolTip("auto: int8 where the CPU has bfloat16 instructions, else float16")
        self.temperature = QtWidgets.QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setSpecialValueText("the model's")
        self.temperature.setAccessibleName("Sampling temperature")
        self.prompt = QtWidgets.QPlainTextEdit()
        self.prompt.setPlaceholderText("empty = the real-time system prompt the model was trained with")
        self.prompt.setAccessibleName("System prompt")
        self.prompt.setFixedHeight(80)
        self.local_only = QtWidgets.QCheckBox("Local only: never use the network")
        self.voice = QtWidgets.QCheckBox("Listen to the microphone")
        self.always_listen = QtWidgets.QCheckBox("Always listening (speaking interrupts the answer)")
        self.speak = QtWidgets.QCheckBox("Read answers aloud")
        self.ptt = QtWidgets.QKeySequenceEdit()
        self.ptt.setAccessibleName("Push-to-talk key")
        self.recognizer = _combo(("auto", "pocketsphinx", "whisper", "off"), "Speech recogniser")
        self.whisper = QtWidgets.QLineEdit()
        self.whisper.setPlaceholderText("folder of a Whisper checkpoint (optional)")
        self.whisper.setAccessibleName("Whisper checkpoint folder")
        self.tts = _combo(("auto", "espeak-ng", "pyttsx3", "off"), "Text to speech")
        self.theme = _combo(("system", "light", "dark"), "Theme")
        self.font_size = QtWidgets.QSpinBox()
        self.font_size.setRange(6, 40)
        self.font_size.setAccessibleName("Font size")
        self.message = QtWidgets.QLabel()
        self.message.setObjectName("settings-message")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #d13438")

        form = QtWidgets.QFormLayout()
        form.addRow("Model", model_row)
        form.addRow("Device", self.device)
        form.addRow("Precision", self.dtype)
        form.addRow("Frames per second", self.fps)
        form.addRow("Memory (frames)", self.memory)
        form.addRow("Context (tokens)", self.context)
        form.addRow("Mode", self.mode)
        form.addRow("Decoding", self.decoding)
        form.addRow("Temperature", self.temperature)
        form.addRow("Decode step", self.decode_step)
        form.addRow("CPU step weights", self.cpu_weights)
        form.addRow("System prompt", self.prompt)
        form.addRow("", self.local_only)
        form.addRow("Voice", self.voice)
        form.addRow("", self.always_listen)
        form.addRow("", self.speak)
        form.addRow("Push-to-talk key", self.ptt)
        form.addRow("Recogniser", self.recognizer)
        form.addRow("Whisper model", self.whisper)
        form.addRow("Text to speech", self.tts)
        form.addRow("Theme", self.theme)
        form.addRow("Font size", self.font_size)

        buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok
            | QtWidgets.QDialogButtonBox.StandardButton.Cancel
            | QtWidgets.QDialogButtonBox.StandardButton.RestoreDefaults
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        buttons.button(QtWidgets.QDialogButtonBox.StandardButton.RestoreDefaults).clicked.connect(
            lambda: self.load(Settings())
        )
        # the form scrolls when the screen is shorter than it (a 768-pixel laptop with a taskbar)
        inner = QtWidgets.QWidget()
        inner.setLayout(form)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(inner)
        want = inner.sizeHint()
        screen = self.screen().availableGeometry() if self.screen() is not None else None
        room = screen.height() - 140 if screen is not None else want.height()
        scroll.setMinimumWidth(want.width() + scroll.verticalScrollBar().sizeHint().width())
        scroll.setMinimumHeight(max(200, min(want.height(), room)))
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(scroll)
        lay.addWidget(self.message)
        lay.addWidget(buttons)
        self.load(settings)

    def load(self, s: Settings) -> None:
        self.model.setText(s.model)
        self.device.setCurrentText(s.device)
        self.dtype.setCurrentText(s.dtype)
        self.fps.setValue(s.fps)
        self.memory.setValue(s.memory_frames)
        self.context.setValue(s.max_context)
        self.mode.setCurrentText(s.mode)
        self.decoding.setCurrentText(s.decoding)
        self.temperature.setValue(s.temperature)
        self.decode_step.setCurrentText(s.decode_step)
        self.cpu_weights.setCurrentText(s.cpu_weights)
        self.prompt.setPlainText(s.system_prompt)
        self.local_only.setChecked(s.local_only)
        self.voice.setChecked(s.voice)
        self.always_listen.setChecked(s.always_listen)
        self.speak.setChecked(s.speak_answers)
        self.ptt.setKeySequence(QtGui.QKeySequence(s.push_to_talk_key))
        self.recognizer.setCurrentText(s.recognizer)
        self.whisper.setText(s.whisper_model)
        self.tts.setCurrentText(s.tts)
        self.theme.setCurrentText(s.theme)
        self.font_size.setValue(s.font_size)
        self.message.clear()

    def values(self) -> tuple[Settings, list[str]]:
        """The form as Settings (fields it does not show are kept from the settings it was opened with)."""
        d = to_dict(self._base)
        d.update(
            model=self.model.text().strip(),
            device=self.device.currentText().strip(),
            dtype=self.dtype.currentText(),
            fps=round(self.fps.value(), 3),
            memory_frames=self.memory.value(),
            max_context=self.context.value(),
            mode=self.mode.currentText(),
            decoding=self.decoding.currentText(),
            temperature=round(self.temperature.value(), 3),
            decode_step=self.decode_step.currentText(),
            cpu_weights=self.cpu_weights.currentText(),
            system_prompt=self.prompt.toPlainText().strip(),
            local_only=self.local_only.isChecked(),
            voice=self.voice.isChecked(),
            always_listen=self.always_listen.isChecked(),
            speak_answers=self.speak.isChecked(),
            push_to_talk_key=self.ptt.keySequence().toString() or "F8",
            recognizer=self.recognizer.currentText(),
            whisper_model=self.whisper.text().strip(),
            tts=self.tts.currentText(),
            theme=self.theme.currentText(),
            font_size=self.font_size.value(),
        )
        return validate(d, where="Settings")

    def accept(self) -> None:
        s, problems = self.values()
        if problems:
            self.message.setText("\n".join(problems))
            return
        self.result_settings = s
        super().accept()

    def _choose_model(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Choose a model folder", self.model.text())
        if folder:
            self.model.setText(folder)

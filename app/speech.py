"""Speech in and out: recognisers (pocketsphinx, a local Whisper checkpoint) and text to speech
(espeak-ng, pyttsx3), each behind a small protocol, made by `make_recognizer` / `make_tts`, which
raise `VoiceUnavailable` naming what is missing. Audio capture, voice activity and the voice loop are
in `app.audio`. Knows nothing of Qt.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

RATE = 16000  # every detector and recogniser works at 16 kHz mono


class VoiceUnavailable(Exception):
    """A voice component is missing; the message names it and says how to get it."""


# ---- speech to text ----------------------------------------------------------------------------------


class Recognizer(Protocol):
    name: str

    def transcribe(self, audio: np.ndarray) -> str:
        """float32 16 kHz mono -> text ('' when nothing was understood)."""
        ...


class PocketSphinxRecognizer:
    name = "pocketsphinx"

    def __init__(self) -> None:
        try:
            import pocketsphinx
        except ImportError:
            raise VoiceUnavailable(
                "Speech recognition needs pocketsphinx (pip install pocketsphinx)."
            ) from None
        self._decoder = pocketsphinx.Decoder(samprate=RATE, logfn=_devnull())

    def transcribe(self, audio: np.ndarray) -> str:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
        d = self._decoder
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""


def _devnull() -> str:
    import os

    return os.devnull


class WhisperRecognizer:
    """A local Whisper checkpoint through transformers (imported only when the user names one)."""

    name = "whisper"

    def __init__(self, folder: str):
        if not folder or not Path(folder).expanduser().is_dir():
            raise VoiceUnavailable(f"The Whisper model folder '{folder}' does not exist.")
        try:
            from transformers import pipeline
        except ImportError:
            raise VoiceUnavailable("Whisper needs the transformers package.") from None
        self._pipe = pipeline("automatic-speech-recognition", model=str(Path(folder).expanduser()))

    def transcribe(self, audio: np.ndarray) -> str:
        return str(self._pipe({"raw": audio, "sampling_rate": RATE})["text"]).strip()


def refuse_if_off(choice: str) -> None:
    """VoiceUnavailable when the settings switch speech recognition off."""
    if choice == "off":
        raise VoiceUnavailable("Speech recognition is switched off in the settings.")


def make_recognizer(choice: str = "auto", whisper_model: str = "") -> Recognizer:
    """Raises VoiceUnavailable naming what is missing."""
    refuse_if_off(choice)
    if choice == "whisper" or (choice == "auto" and whisper_model):
        return WhisperRecognizer(whisper_model)
    return PocketSphinxRecognizer()


# ---- text to speech ----------------------------------------------------------------------------------


class TTS(Protocol):
    name: str

    def speak(self, text: str) -> None: ...
    def stop(self) -> None: ...


class EspeakTTS:
    """espeak-ng (or espeak) as a subprocess: speaking never blocks, stop() kills it at once."""

    name = "espeak-ng"

    def __init__(self, rate_wpm: int = 170):
        exe = shutil.which("espeak-ng") or shutil.which("espeak")
        if exe is None:
            raise VoiceUnavailable("Spoken answers need espeak-ng (apt install espeak-ng).")
        self.exe = exe
        self.rate = rate_wpm
        self._proc: subprocess.Popen | None = None

    def speak(self, text: str) -> None:
        self.stop()
        self._proc = subprocess.Popen(
            [self.exe, "-s", str(self.rate), "--", text],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        p, self._proc = self._proc, None
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(0.5)
            except subprocess.TimeoutExpired:
                p.kill()

    @property
    def speaking(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def to_wav(self, text: str, path: Path) -> Path:
        """Speak into a WAV file (used by the voice self-test and the tests)."""
        subprocess.run(
            [self.exe, "-s", str(self.rate), "-w", str(path), "--", text], check=True, capture_output=True
        )
        return path


class Pyttsx3TTS:
    """pyttsx3 on its own thread (its runAndWait blocks); stop() asks the engine to stop."""

    name = "pyttsx3"

    def __init__(self) -> None:
        try:
            import pyttsx3
        except ImportError:
            raise VoiceUnavailable("pyttsx3 is not installed.") from None
        self._engine = pyttsx3.init()
        self._thread: threading.Thread | None = None

    def speak(self, text: str) -> None:
        self.stop()

        def run() -> None:
            self._engine.say(text)
            self._engine.runAndWait()

        self._thread = threading.Thread(target=run, name="tts")
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._engine.stop()
            self._thread.join(1.0)


def make_tts(choice: str = "auto") -> TTS:
    if choice == "off":
        raise VoiceUnavailable("Spoken answers are switched off in the settings.")
    if choice == "pyttsx3":
        return Pyttsx3TTS()
    if choice == "espeak-ng":
        return EspeakTTS()
    try:
        return EspeakTTS()
    except VoiceUnavailable:
        try:
            return Pyttsx3TTS()
        except Exception:
            raise VoiceUnavailable(
                "Spoken answers need espeak-ng (apt install espeak-ng) or pyttsx3."
            ) from None

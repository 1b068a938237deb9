"""Voice: microphone capture, voice activity, speech-to-text and text-to-speech, each pluggable.

Owns the audio path: the sounddevice callback hands each block to an `AudioRing` (a deque append: no
lock, no allocation beyond the copy, never blocks the audio thread), a `VoiceLoop` thread drains it,
resamples to 16 kHz, runs a voice-activity detector over 30 ms frames, cuts utterances (push-to-talk
or, when always listening, by voice activity) and recognises them. Callbacks report "the user started
speaking" (barge-in: the assistant stops talking) and "the user said TEXT" (a question).

Detectors: webrtcvad (webrtcvad-wheels) when installed, else silero-vad through onnxruntime when both
are installed, else `EnergyVAD`, the named fallback (an adaptive energy threshold). Recognisers:
pocketsphinx (offline, its English model ships in the wheel) is the default; a Whisper checkpoint
through transformers is used when the user names one. Speech: espeak-ng as a subprocess, or pyttsx3.
Each missing piece is reported by name; the app keeps working without it. It knows nothing of Qt:
the window wraps the callbacks in queued signals.
"""

from __future__ import annotations

import collections
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from app.speech import (  # noqa: F401  (the voice API, used from app.audio)
    RATE,
    TTS,
    EspeakTTS,
    PocketSphinxRecognizer,
    Pyttsx3TTS,
    Recognizer,
    VoiceUnavailable,
    WhisperRecognizer,
    make_recognizer,
    make_tts,
)

FRAME = 480  # 30 ms at 16 kHz: a frame size webrtcvad accepts


# ---- hand-off from the audio callback ----------------------------------------------------------------


class AudioRing:
    """Single producer (the audio callback) / single consumer (the voice thread) hand-off of blocks.

    `collections.deque.append` and `popleft` are single C calls, atomic under the GIL, so neither
    side ever waits for the other; `maxlen` bounds memory (the oldest audio goes when the consumer
    stalls, counted in `overflows` by the consumer side, which sees the gap in `pushed`).
    """

    def __init__(self, rate: int = RATE, max_blocks: int = 2000):
        self.rate = rate  # sample rate of the blocks pushed
        self._q: collections.deque[np.ndarray] = collections.deque(maxlen=max_blocks)
        self.pushed = 0  # written only by the producer
        self.popped = 0  # written only by the consumer
        self.status_flags = 0  # input overflows reported by PortAudio

    def callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """sounddevice's InputStream callback signature; also how tests feed recorded audio."""
        if status:
            self.status_flags += 1
        block = indata[:, 0] if indata.ndim == 2 else indata
        if block.dtype == np.int16:
            block = block.astype(np.float32) / 32768.0
        else:
            block = np.array(block, dtype=np.float32)  # copy: PortAudio reuses its buffer
        self._q.append(block)
        self.pushed += 1

    def pop_all(self) -> list[np.ndarray]:
        out = []
        while True:
            try:
                out.append(self._q.popleft())
            except IndexError:
                break
        self.popped += len(out)
        return out

    @property
    def lost(self) -> int:
        return self.pushed - self.popped - len(self._q)


class Resampler:
    """Streaming linear resampling to 16 kHz (good enough for speech recognition, no dependencies)."""

    def __init__(self, rate_in: int, rate_out: int = RATE):
        self.step = rate_in / rate_out
        self._pos = 0.0  # position of the next output sample, in input samples, relative to `_prev`
        self._prev = np.zeros(1, np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.step == 1.0:
            return x
        buf = np.concatenate([self._prev, x])  # index 0 is the last sample of the previous block
        n = int(np.floor((len(buf) - 1 - self._pos) / self.step)) + 1
        if n <= 0:
            self._pos -= len(x)
            self._prev = buf[-1:]
            return np.zeros(0, np.float32)
        at = self._pos + self.step * np.arange(n)
        out = np.interp(at, np.arange(len(buf)), buf).astype(np.float32)
        self._pos = at[-1] + self.step - (len(buf) - 1)
        self._prev = buf[-1:]
        return out


# ---- voice activity ----------------------------------------------------------------------------------


class VAD(Protocol):
    name: str
    frame_samples: int

    def is_speech(self, frame: np.ndarray) -> bool:
        """`frame`: float32 in [-1, 1], `frame_samples` long, 16 kHz."""
        ...


class EnergyVAD:
    """The fallback detector: speech when the frame's level is well above a tracked noise floor."""

    name = "energy (fallback)"
    frame_samples = FRAME

    def __init__(self, margin_db: float = 12.0, floor_db: float = -50.0):
        self.margin_db = margin_db
        self.noise_db = floor_db  # adapts down fast and up slowly
        self.min_db = floor_db

    def is_speech(self, frame: np.ndarray) -> bool:
        rms = float(np.sqrt(np.mean(np.square(frame, dtype=np.float64)) + 1e-12))
        db = 20.0 * np.log10(rms + 1e-9)
        speech = db > max(self.noise_db, self.min_db) + self.margin_db
        if not speech:  # follow the noise: quickly when quieter, slowly when louder
            rate = 0.3 if db < self.noise_db else 0.02
            self.noise_db += rate * (db - self.noise_db)
        return speech


class WebRtcVAD:
    name = "webrtcvad"
    frame_samples = FRAME

    def __init__(self, aggressiveness: int = 2):
        import webrtcvad

        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: np.ndarray) -> bool:
        pcm = (np.clip(frame, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
        return bool(self._vad.is_speech(pcm, RATE))


class SileroVAD:
    """silero-vad's ONNX model run with onnxruntime on numpy arrays (no torch in the app)."""

    name = "silero-vad"
    frame_samples = 512  # the model's window at 16 kHz
    context = 64  # samples of the previous window the model expects in front of each window

    def __init__(self, threshold: float = 0.5):
        import importlib.resources

        import onnxruntime

        path = importlib.resources.files("silero_vad") / "data" / "silero_vad.onnx"
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = opts.intra_op_num_threads = 1
        self._s = onnxruntime.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.threshold = threshold
        self._state = np.zeros((2, 1, 128), np.float32)
        self._ctx = np.zeros((1, self.context), np.float32)

    def is_speech(self, frame: np.ndarray) -> bool:
        x = np.concatenate([self._ctx, frame.reshape(1, -1).astype(np.float32)], axis=1)
        out, self._state = self._s.run(
            None, {"input": x, "state": self._state, "sr": np.array(RATE, np.int64)}
        )
        self._ctx = x[:, -self.context :]
        return float(out[0][0]) >= self.threshold


def make_vad() -> VAD:
    """The best detector installed: webrtcvad, then silero-vad (with onnxruntime), then energy."""
    try:
        return WebRtcVAD()
    except ImportError:
        pass
    try:
        return SileroVAD()
    except Exception:  # missing package, missing model file, or an onnxruntime build problem
        pass
    return EnergyVAD()


@dataclass
class Segmenter:
    """Cuts utterances from per-frame speech decisions, with a start delay, a hangover and pre-roll."""

    start_frames: int = 3  # consecutive speech frames before "speech started" (90 ms)
    end_frames: int = 20  # consecutive non-speech frames that end an utterance (600 ms)
    preroll_frames: int = 10  # audio kept from before the start (word onsets are quiet)
    max_frames: int = 500  # force an end after 15 s
    _pre: collections.deque = field(default_factory=collections.deque)
    _utt: list = field(default_factory=list)
    _run: int = 0
    _quiet: int = 0
    active: bool = False

    def push(self, frame: np.ndarray, speech: bool) -> tuple[bool, np.ndarray | None]:
        """(speech just started, finished utterance audio or None)."""
        started = False
        if not self.active:
            self._pre.append(frame)
            while len(self._pre) > self.preroll_frames + self.start_frames:
                self._pre.popleft()
            self._run = self._run + 1 if speech else 0
            if self._run >= self.start_frames:
                self.active, started = True, True
                self._utt = list(self._pre)
                self._pre.clear()
                self._quiet = 0
            return started, None
        self._utt.append(frame)
        self._quiet = 0 if speech else self._quiet + 1
        if self._quiet >= self.end_frames or len(self._utt) >= self.max_frames:
            audio = np.concatenate(self._utt)
            self.active, self._utt, self._run = False, [], 0
            return False, audio
        return False, None


# ---- the microphone ----------------------------------------------------------------------------------


class Microphone:
    """The default input device through sounddevice, feeding an AudioRing from its callback."""

    def __init__(self, ring: AudioRing):
        self.ring = ring
        self._stream: Any = None
        self.name = ""

    def open(self) -> None:
        try:
            import sounddevice as sd
        except (ImportError, OSError):
            raise VoiceUnavailable("The microphone needs PortAudio (apt install libportaudio2).") from None
        try:
            info = sd.query_devices(kind="input")
        except Exception:
            raise VoiceUnavailable("No microphone found.") from None
        rate = int(info.get("default_samplerate") or RATE)
        self.name = str(info.get("name", "microphone"))
        try:
            self._stream = sd.InputStream(
                samplerate=rate, channels=1, dtype="float32", callback=self.ring.callback
            )
            self._stream.start()
        except Exception as e:
            raise VoiceUnavailable(f"The microphone could not be opened ({e}).") from None
        self.ring.rate = rate

    def close(self) -> None:
        s, self._stream = self._stream, None
        if s is not None:
            s.stop()
            s.close()


# ---- the loop ----------------------------------------------------------------------------------------


class VoiceLoop:
    """Drains the ring in its own thread: VAD, utterances (push-to-talk or always listening), recognition.

    `on_speech_start()` fires when the user starts speaking (barge-in), `on_text(text)` with each
    recognised utterance, `on_error(message)` on a recogniser failure. All run in the voice thread.
    """

    def __init__(
        self,
        ring: AudioRing,
        vad: VAD,
        recognizer: Recognizer | None,
        on_text: Callable[[str], None],
        on_speech_start: Callable[[], None] = lambda: None,
        on_error: Callable[[str], None] = lambda m: None,
        always_listen: bool = False,
    ):
        self.ring, self.vad, self.recognizer = ring, vad, recognizer
        self.on_text, self.on_speech_start, self.on_error = on_text, on_speech_start, on_error
        self.always_listen = always_listen
        self.segmenter = Segmenter()
        self.utterances = 0
        self._ptt = False
        self._ptt_audio: list[np.ndarray] = []
        self._ptt_released = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._resampler = Resampler(ring.rate)
        self._rate = ring.rate
        self._pending = np.zeros(0, np.float32)

    def start(self) -> VoiceLoop:
        self._thread = threading.Thread(target=self._run, name="voice")
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def ptt_down(self) -> None:
        if not self._ptt:
            self._ptt, self._ptt_audio = True, []
            self.on_speech_start()

    def ptt_up(self) -> None:
        if self._ptt:
            self._ptt = False
            self._ptt_released = True
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.process_available():
                self._wake.wait(0.02)  # audio arrives every ~10-30 ms; a short wait, no spinning
                self._wake.clear()

    def process_available(self) -> bool:
        """Handle every block in the ring; True if there was any. Public so tests can step it."""
        blocks = self.ring.pop_all()
        if self.ring.rate != self._rate:
            self._rate, self._resampler = self.ring.rate, Resampler(self.ring.rate)
        for b in blocks:
            self._pending = np.concatenate([self._pending, self._resampler(b)])
        n = self.vad.frame_samples
        while len(self._pending) >= n:
            frame, self._pending = self._pending[:n], self._pending[n:]
            self._frame(frame)
        if self._ptt_released:
            self._ptt_released = False
            audio = np.concatenate(self._ptt_audio) if self._ptt_audio else np.zeros(0, np.float32)
            self._ptt_audio = []
            self._recognise(audio)
        return bool(blocks)

    def _frame(self, frame: np.ndarray) -> None:
        if self._ptt:
            self._ptt_audio.append(frame)
            return
        if not self.always_listen:
            return
        started, audio = self.segmenter.push(frame, self.vad.is_speech(frame))
        if started:
            self.on_speech_start()
        if audio is not None:
            self._recognise(audio)

    def _recognise(self, audio: np.ndarray) -> None:
        if len(audio) < RATE // 5 or self.recognizer is None:  # under 200 ms: a click, not a question
            return
        try:
            text = self.recognizer.transcribe(audio)
        except Exception as e:  # a recogniser bug must not kill the voice thread
            self.on_error(f"Speech recognition failed ({type(e).__name__}: {e}).")
            return
        self.utterances += 1
        if text:
            self.on_text(text)


# ---- what is there -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceStatus:
    microphone: str | None  # device name, or None
    vad: str
    recognizer: str | None
    tts: str | None
    missing: tuple[str, ...]  # one sentence per missing piece

    def summary(self) -> str:
        have = [f"VAD: {self.vad}"]
        if self.microphone:
            have.insert(0, f"microphone: {self.microphone}")
        if self.recognizer:
            have.append(f"recogniser: {self.recognizer}")
        if self.tts:
            have.append(f"speech: {self.tts}")
        return "; ".join(have) + ("" if not self.missing else ". " + " ".join(self.missing))


def check_voice(recognizer: str = "auto", whisper_model: str = "", tts: str = "auto") -> VoiceStatus:
    """What the voice features can use on this machine, without opening the microphone."""
    missing = []
    mic = None
    try:
        import sounddevice as sd

        try:
            mic = str(sd.query_devices(kind="input")["name"])
        except Exception:
            missing.append("No microphone found.")
    except (ImportError, OSError):
        missing.append("The microphone needs PortAudio (apt install libportaudio2).")
    rec_name = None
    try:
        if recognizer == "whisper" or (recognizer == "auto" and whisper_model):
            if not whisper_model or not Path(whisper_model).expanduser().is_dir():
                raise VoiceUnavailable(f"The Whisper model folder '{whisper_model}' does not exist.")
            rec_name = "whisper"
        elif recognizer != "off":
            import importlib.util

            if importlib.util.find_spec("pocketsphinx") is None:
                raise VoiceUnavailable("Speech recognition needs pocketsphinx (pip install pocketsphinx).")
            rec_name = "pocketsphinx"
    except VoiceUnavailable as e:
        missing.append(str(e))
    tts_name = None
    if tts != "off":
        if tts in ("auto", "espeak-ng") and (shutil.which("espeak-ng") or shutil.which("espeak")):
            tts_name = "espeak-ng"
        else:
            import importlib.util

            if tts in ("auto", "pyttsx3") and importlib.util.find_spec("pyttsx3") is not None:
                tts_name = "pyttsx3"
            else:
                missing.append("Spoken answers need espeak-ng (apt install espeak-ng) or pyttsx3.")
    return VoiceStatus(mic, make_vad().name, rec_name, tts_name, tuple(missing))

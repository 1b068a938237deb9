"""Speech recognition in a process of its own, so that it never freezes the window.

pocketsphinx holds Python's global interpreter lock while it loads its model (~0.3 s) and while it
decodes an utterance, so in a thread of the app every Qt repaint and key press waits for it. Here the
recogniser lives in a child process (spawned, so it shares nothing with Qt); the voice thread sends it
audio over a pipe and waits for the text without holding the lock. Same interface as the in-process
recognisers of `app.audio` (`name`, `transcribe(audio) -> str`), plus `close()`.
"""

from __future__ import annotations

import multiprocessing as mp

import numpy as np

from app.speech import VoiceUnavailable, refuse_if_off

START_TIMEOUT_S = 60.0


def _serve(conn, choice: str, whisper_model: str) -> None:
    from app.speech import make_recognizer

    try:
        rec = make_recognizer(choice, whisper_model)
    except VoiceUnavailable as e:
        conn.send(("unavailable", str(e)))
        return
    except Exception as e:  # a broken model folder: say so in the parent, in one sentence
        conn.send(("unavailable", f"The speech recogniser could not start ({type(e).__name__}: {e})."))
        return
    conn.send(("ready", rec.name))
    while True:
        try:
            audio = conn.recv()
        except (EOFError, OSError):
            return
        if audio is None:
            return
        try:
            conn.send(("ok", rec.transcribe(audio)))
        except Exception as e:
            conn.send(("error", f"{type(e).__name__}: {e}"))


class RecognizerProcess:
    def __init__(self, choice: str = "auto", whisper_model: str = "") -> None:
        refuse_if_off(choice)  # no process to start for that
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve, args=(child, choice, whisper_model), name="moss-live-speech", daemon=True
        )
        self._proc.start()
        child.close()
        if not self._conn.poll(START_TIMEOUT_S):
            self.close()
            raise VoiceUnavailable("The speech recogniser did not start within a minute.")
        try:
            kind, info = self._conn.recv()
        except EOFError:
            self.close()
            raise VoiceUnavailable("The speech recogniser stopped while starting.") from None
        if kind != "ready":
            self.close()
            raise VoiceUnavailable(info)
        self.name = info

    def transcribe(self, audio: np.ndarray) -> str:
        self._conn.send(np.asarray(audio, dtype=np.float32))
        kind, text = self._conn.recv()
        if kind != "ok":
            raise RuntimeError(f"speech recognition failed: {text}")
        return text

    def close(self) -> None:
        try:
            self._conn.send(None)
        except (OSError, ValueError):
            pass
        self._conn.close()
        self._proc.join(1.0)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(1.0)

    def __str__(self) -> str:
        return f"{self.name} (own process)"

"""Test doubles for the app: a backend that loads instantly and hands out scripted sessions.

The scripted session itself lives in app.scripted (the screenshot script and the benchmark use it too);
tests that need the real runtime use `EngineBackend`-like loading of the engine's tiny random model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from app.backend import LoadedModel, LoadFailed
from app.scripted import ScriptedSession
from app.settings import Settings


class FakeBackend:
    def __init__(
        self,
        make_session: Callable[[], object] | None = None,
        load_delay_s: float = 0.0,
        fail: str | None = None,
    ) -> None:
        self.make_session = make_session or (lambda: ScriptedSession(fps=2.0, tokens_per_s=60.0))
        self.load_delay_s = load_delay_s
        self.fail = fail
        self.loads = 0
        self.sessions: list = []
        self.transcript_dirs: list[Path | None] = []

    def load(self, settings: Settings, report) -> LoadedModel:
        self.loads += 1
        report(0.0, "Loading the fake model…")
        steps = 5
        for i in range(steps):
            time.sleep(self.load_delay_s / steps)
            report((i + 1) / steps, f"step {i + 1} of {steps}")
        if self.fail:
            raise LoadFailed(self.fail)
        return LoadedModel(object(), "fake model", "cpu")

    def new_session(self, model: LoadedModel, settings: Settings, transcript_dir: Path | None):
        s = self.make_session()
        self.sessions.append(s)
        self.transcript_dirs.append(transcript_dir)
        return s


class RealBackend:
    """The real engine Session with the engine's tiny random model (no weights needed)."""

    def __init__(self, transcripts: bool = True) -> None:
        self.transcripts = transcripts
        self.sessions: list = []

    def load(self, settings: Settings, report) -> LoadedModel:
        from engine.bundled import random_checkpoint

        m = random_checkpoint("cpu")
        return LoadedModel(m, "random tiny model", "cpu", trained=False)

    def new_session(self, model: LoadedModel, settings: Settings, transcript_dir: Path | None):
        from app.backend import EngineBackend

        s = EngineBackend().new_session(model, settings, transcript_dir if self.transcripts else None)
        self.sessions.append(s)
        return s

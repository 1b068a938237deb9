"""Faults: a thread that raises, out of memory, and the process killed mid-stream.

A failure in a channel must become an Error event and a clean SessionEnd, leave no "moss-" thread,
and let a new Session on the same model start at once (no app restart).
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from engine import events as E
from engine.bundled import random_checkpoint
from engine.generation import StreamDecoder
from engine.loading import LoadError, load_model, save_checkpoint
from engine.session import Session, SessionConfig
from engine.sources import SyntheticSource
from engine.transcript import list_sessions, load_transcript

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model():
    return random_checkpoint()


def moss_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("moss-") and t.is_alive()]


def run_session(model, frames=4, timeout=30.0) -> list[E.Event]:
    s = Session(model, config=SessionConfig(realtime=False, fps=1, system_prompt="watch"))
    s.start(SyntheticSource(fps=1, realtime=False, num_frames=frames))
    evs = list(s.events(timeout=timeout))
    deadline = time.monotonic() + 2.0
    while moss_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    return evs


def failing(orig, after: int, exc: BaseException):
    """`orig` that raises `exc` from its (after+1)-th call on."""
    calls = [0]

    def fn(*a, **k):
        calls[0] += 1
        if calls[0] > after:
            raise exc
        return orig(*a, **k)

    return fn


@pytest.mark.parametrize(
    "where, exc",
    [
        ("perception", RuntimeError("boom in the vision tower")),
        ("generation", RuntimeError("boom in decode")),
        ("perception", torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")),
        ("generation", torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")),
    ],
    ids=["perception", "generation", "perception-oom", "generation-oom"],
)
def test_thread_failure_ends_cleanly_and_a_new_session_starts(model, monkeypatch, where, exc):
    if where == "perception":
        monkeypatch.setattr(model.model, "encode_frames", failing(model.model.encode_frames, 1, exc))
    else:
        monkeypatch.setattr(StreamDecoder, "step", failing(StreamDecoder.step, 3, exc))
    evs = run_session(model, frames=50)
    errors = [e for e in evs if isinstance(e, E.Error)]
    assert len(errors) == 1 and errors[0].where == where and errors[0].fatal
    if isinstance(exc, torch.OutOfMemoryError):
        assert "Out of memory" in errors[0].message and "lower the memory capacity" in errors[0].message
    else:
        assert str(exc) in errors[0].message
    assert isinstance(evs[-1], E.SessionEnd) and evs[-1].reason == "error"
    assert moss_threads() == []

    monkeypatch.undo()  # the fault is gone: the same model runs a new session at once
    again = run_session(model, frames=3)
    assert not any(isinstance(e, E.Error) for e in again)
    assert sum(isinstance(e, E.FrameSeen) for e in again) == 3
    assert again[-1].reason == "source ended" and moss_threads() == []


def test_out_of_memory_while_loading_is_a_clear_message(tmp_path, monkeypatch, capfd):
    folder = save_checkpoint(random_checkpoint(), tmp_path / "m")

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(torch.nn.Module, "to", oom)
    with pytest.raises(LoadError, match="Out of memory.*smaller dtype"):
        load_model(folder)
    import main

    code = main.main(["--headless", "--model", str(folder), "--source", "synthetic:1"])
    out, err = capfd.readouterr()
    assert code == 2 and err.startswith("error: Out of memory") and err.count("\n") == 1, err


def test_sigkill_mid_stream_keeps_the_transcript_and_lists_the_session(tmp_path):
    folder = tmp_path / "sessions"
    folder.mkdir()
    path = folder / "killed.jsonl"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "QT_QPA_PLATFORM": "offscreen"}
    p = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--headless", "--source", "synthetic", "--fps", "4"]
        + ["--transcript", str(path), "--ask", "0.5=What do you see?"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if path.exists() and path.read_text().count('"FrameSeen"') >= 4:
                break
            time.sleep(0.1)
        time.sleep(1.2)  # at least one flush interval after what we saw
        seen = path.read_text().splitlines()
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait(10)
    assert p.returncode == -signal.SIGKILL
    tr = load_transcript(path)
    kinds = [e.kind for e in tr.events]
    assert kinds[0] == "SessionStart" and kinds.count("FrameSeen") >= 4 and not tr.complete
    assert len(tr.events) >= len(seen) - 1  # everything on disk a second before the kill is still there
    last = max(e.t for e in tr.events)
    assert last >= max(e.t for e in tr.events if e.kind == "FrameSeen") - 1.0
    (info,) = list_sessions(folder)
    assert info.path == path and not info.complete and info.problem == ""
    assert info.id == tr.events[0].session_id and info.duration == last

"""Bad input and faults, round two: each class ends in one clear sentence (or a quiet, conventional
exit), nothing is lost, and a file this app did not write is never modified.

Classes: the user's files, path names, numbers on the command line, model folders, settings,
questions, signals and pipes, export names. The window's side is in tests/app/test_bad_input_window.py.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine import events as E
from engine.bundled import MODEL_DIR, random_checkpoint
from engine.loading import LoadError, load_model, save_checkpoint
from engine.session import Session, SessionConfig
from engine.sources import SyntheticSource
from engine.transcript import NotOurFile, TranscriptWriter, read_transcript

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "assets" / "demo.mp4"


def main_py(*args, timeout=120, stdin=None, **kw):
    """`main.py --headless ARGS` in a fresh process (bytes arguments allowed): (code, stdout, stderr)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": kw.pop("home", "/tmp"), "QT_QPA_PLATFORM": "offscreen"}
    r = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--headless", "--quiet-silence", *args],
        capture_output=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
        stdin=stdin,
    )
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def one_error(code: int, out: str, err: str, words: str, status: int = 2) -> None:
    lines = [line for line in (out + err).splitlines() if "error:" in line]
    assert code == status, out + err
    assert len(lines) == 1 and words in lines[0], out + err
    assert "Traceback" not in err


# ---- the user's files -----------------------------------------------------------------------------


def test_a_file_of_the_users_given_as_transcript_is_never_touched(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"my notes\nline two without a newline")  # the case that used to lose 40 bytes
    before = notes.read_bytes()
    code, out, err = main_py("--source", "synthetic:3", "--fast", "--transcript", str(notes))
    assert code == 0, err
    assert notes.read_bytes() == before
    moved = tmp_path / "notes (2).txt"
    assert "is not a transcript written by this app" in err and str(moved) in err
    assert read_transcript(moved)[0].kind == "SessionStart"
    with pytest.raises(NotOurFile):
        TranscriptWriter(notes)
    assert notes.read_bytes() == before


def test_our_own_transcript_is_appended_to(tmp_path):
    t = tmp_path / "t.jsonl"
    for _ in range(2):
        assert main_py("--source", "synthetic:2", "--fast", "--transcript", str(t))[0] == 0
    assert sum(e.kind == "SessionStart" for e in read_transcript(t)) == 2


def test_a_folder_as_transcript_or_subtitles_is_one_sentence_before_anything_runs(tmp_path):
    one_error(*main_py("--source", "synthetic:2", "--transcript", str(tmp_path)), "is a folder")
    (tmp_path / "x.srt").mkdir()
    one_error(*main_py("--source", "synthetic:2", "--srt", str(tmp_path / "x.srt")), "is a folder")


def test_existing_subtitles_are_not_overwritten(tmp_path):
    srt = tmp_path / "out.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nmine\n")
    code, out, err = main_py("--source", "synthetic:3", "--fast", "--srt", str(srt))
    assert code == 0, err
    assert srt.read_text().endswith("mine\n") and (tmp_path / "out (2).srt").is_file()
    assert "left as it is" in err


def test_an_unwritable_sessions_folder_is_said_once_and_the_session_runs(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    s = Session(
        random_checkpoint(), config=SessionConfig(realtime=False, transcript_dir=blocker / "sessions")
    )
    s.start(SyntheticSource(fps=1, realtime=False, num_frames=3))
    evs = list(s.events(timeout=60))
    errors = [e for e in evs if isinstance(e, E.Error)]
    assert len(errors) == 1 and errors[0].where == "transcript" and "without one" in errors[0].message
    assert sum(isinstance(e, E.FrameSeen) for e in evs) == 3 and evs[-1].kind == "SessionEnd"
    assert blocker.read_text() == "x"


class FullDisk:
    """A file whose writes succeed until `room` bytes have gone, then fail as a full disk does."""

    def __init__(self, real, room: int):
        self.real, self.room = real, room

    def write(self, b: bytes) -> int:
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(b)
        return self.real.write(b)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_full_disk_is_said_once_keeps_what_was_written_and_the_session_runs(tmp_path, monkeypatch):
    path = tmp_path / "t.jsonl"
    real_init = TranscriptWriter.__init__

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        self._file = FullDisk(self._file, room=600)

    monkeypatch.setattr(TranscriptWriter, "__init__", init)
    s = Session(random_checkpoint(), config=SessionConfig(realtime=False, transcript_path=path))
    s.start(SyntheticSource(fps=1, realtime=False, num_frames=6))
    evs = list(s.events(timeout=60))
    errors = [e for e in evs if isinstance(e, E.Error)]
    assert len(errors) == 1 and "the disk is full" in errors[0].message, errors
    assert sum(isinstance(e, E.FrameSeen) for e in evs) == 6 and evs[-1].kind == "SessionEnd"
    kept = read_transcript(path)
    assert kept and kept[0].kind == "SessionStart"  # what fit on the disk is there and readable


# ---- path names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        b"ends in a space.mp4 ",
        b" starts with a space.mp4",
        b"caf\xe9 latin-1.mp4",
        b"100% sure.mp4",
        b"-dash.mp4",
    ],
    ids=["trailing-space", "leading-space", "not-utf8", "percent", "dash"],
)
def test_any_name_the_os_accepts_plays(tmp_path, name):
    path = os.path.join(os.fsencode(tmp_path), name)
    shutil.copy(DEMO, path)
    code, out, err = main_py("--source", path, "--fast", "--duration", "3")
    assert code == 0 and "Traceback" not in err, out + err
    assert "error" not in out and "session ended" in out


# ---- numbers and names on the command line ------------------------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [
        (["--duration", "nan"], "--duration"),
        (["--duration", "-5"], "--duration"),
        (["--fps", "0"], "--fps"),
        (["--fps", "inf"], "--fps"),
        (["--memory-frames", "1000000000"], "--memory-frames"),
        (["--device", "gpu"], "'gpu' is not a device"),
        (["--ask", "nan=What?"], "--ask"),
        (["--ask", "-3=What?"], "--ask"),
        (["--top-p", "0"], "--top-p"),
        (["--temperature", "-1"], "--temperature"),
        (["--seed", "-1"], "--seed"),
        (["--srt", "subtitles.txt"], "ending in .srt"),
        (["--vtt", "subtitles.srt"], "ending in .vtt"),
        (["--mode", "fast"], "--mode"),
    ],
)
def test_bad_options_are_one_sentence_before_anything_runs(tmp_path, args, words):
    code, out, err = main_py("--source", "synthetic:2", *args, home=str(tmp_path))
    one_error(code, out, err, words)
    assert not (tmp_path / ".local").exists()  # nothing ran: no session was recorded


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a CUDA GPU")
def test_cuda_on_a_machine_without_one_blames_the_machine_not_the_weights():
    one_error(*main_py("--source", "synthetic:2", "--device", "cuda"), "no CUDA GPU")
    with pytest.raises(LoadError, match="no CUDA GPU"):
        load_model(MODEL_DIR, device="cuda")


def test_a_memory_the_machine_cannot_hold_is_refused_before_allocating(monkeypatch):
    import engine.session

    monkeypatch.setattr(engine.session, "free_bytes", lambda device: 100 * 2**20)  # 100 MB free
    with pytest.raises(ValueError, match="GB, more than the 0.1 GB free on cpu; use fewer frames"):
        Session(random_checkpoint(), config=SessionConfig(memory_frames=65536))
    Session(random_checkpoint(), config=SessionConfig(memory_frames=64))  # what fits still starts
    with pytest.raises(ValueError, match="from 1 up to 65536, not 1000000000"):
        Session(random_checkpoint(), config=SessionConfig(memory_frames=10**9))


# ---- model folders -------------------------------------------------------------------------------------


def model_folder(tmp_path) -> Path:
    return save_checkpoint(random_checkpoint(), tmp_path / "m")


def edit_config(folder: Path, **text):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["text_config"].update(text)
    (folder / "config.json").write_text(json.dumps(cfg))


def break_zero_heads(folder):
    edit_config(folder, num_attention_heads=0)
    return "num_attention_heads is 0"


def break_tokenizer_not_json(folder):
    (folder / "tokenizer.json").write_bytes(b"\x00\x01 this is not json")
    return "tokenizer.json is not a tokenizer.json"


def break_tokenizer_of_another_model(folder):
    shutil.copy(MODEL_DIR / "tokenizer.json", folder / "tokenizer.json")  # the bundled model's: 921 ids
    return "tokenizer.json belongs to another model"


def break_int32_weights(folder):
    f = folder / "model.safetensors"
    sd = load_file(str(f))
    key = next(k for k in sd if k.endswith("lm_head.weight"))
    sd[key] = sd[key].to(torch.int32)
    save_file(sd, str(f))
    return "is stored as int32"


def break_config_endless(folder):
    (folder / "config.json").unlink()
    os.symlink("/dev/zero", folder / "config.json")
    return "not a regular file"


def break_config_huge(folder):
    with open(folder / "config.json", "ab") as f:
        f.truncate(5 * 2**20)
    return "too large for a config.json"


def break_generation_config(folder):
    (folder / "generation_config.json").write_text("{not json")
    return "generation_config.json is not valid JSON"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "breaker",
    [
        break_zero_heads,
        break_tokenizer_not_json,
        break_tokenizer_of_another_model,
        break_int32_weights,
        break_config_endless,
        break_config_huge,
        break_generation_config,
    ],
    ids=lambda f: f.__name__[6:],
)
def test_every_model_folder_problem_is_one_sentence_naming_the_file(tmp_path, breaker):
    folder = model_folder(tmp_path)
    words = breaker(folder)
    with pytest.raises(LoadError) as e:
        load_model(folder)
    message = str(e.value)
    assert words in message and "\n" not in message, message


# ---- questions --------------------------------------------------------------------------------------


def test_a_question_after_the_video_ends_is_answered_and_the_run_ends():
    code, out, err = main_py("--source", str(DEMO), "--fast", "--ask", "500=What do you see?", timeout=120)
    assert code == 0, err
    lines = out.splitlines()
    i = next(n for n, line in enumerate(lines) if "you: What do you see?" in line)
    assert "assistant: I see" in lines[i + 1] and "session ended (source ended)" in lines[-1]


def test_a_question_that_is_not_utf8_is_read_leniently_and_said(tmp_path):
    code, out, err = main_py(
        "--source", "synthetic:3", "--fast", "--ask", b"0=Qu'est-ce que c'est, caf\xe9 ?"
    )
    assert code == 0 and "Traceback" not in err, err
    assert "was not UTF-8 text; it was read as Latin-1" in err
    assert "you: Qu'est-ce que c'est, café ?" in out
    s = Session(random_checkpoint(), config=SessionConfig(realtime=False))  # the engine's own guard
    s.ask("caf\udce9?")
    s.start(SyntheticSource(fps=1, realtime=False, num_frames=2))
    starts = [e for e in s.events(timeout=60) if isinstance(e, E.TurnStart) and e.turn == 1]
    assert starts and starts[0].question == "caf\ufffd?"


# ---- signals and pipes --------------------------------------------------------------------------------


def start(tmp_path, *extra):
    t = tmp_path / "t.jsonl"
    p = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "main.py"),
            "--headless",
            "--source",
            "synthetic",
            "--transcript",
            str(t),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "QT_QPA_PLATFORM": "offscreen"},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (t.exists() and t.stat().st_size > 0):
        time.sleep(0.1)
    time.sleep(1.0)
    return p, t


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT twice", "SIGHUP"])
def test_every_way_of_ending_closes_the_transcript_and_exits_quietly(tmp_path, how):
    p, t = start(tmp_path)
    if how == "SIGINT twice":
        p.send_signal(signal.SIGINT)
        time.sleep(0.01)
        p.send_signal(signal.SIGINT)
        status = 130
    else:
        sig = getattr(signal, how)
        p.send_signal(sig)
        status = 128 + sig
    out, err = p.communicate(timeout=60)
    assert p.returncode == status, err
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err, err
    assert read_transcript(t)[-1].kind == "SessionEnd"


def test_a_closed_stdout_ends_the_run_quietly(tmp_path):
    p, t = start(tmp_path)
    p.stdout.close()  # the reader went away, as `| head` does
    err = p.stderr.read()
    p.wait(timeout=60)
    assert p.returncode == 141 and b"Traceback" not in err and b"BrokenPipe" not in err, err
    assert read_transcript(t)[-1].kind == "SessionEnd"

"""Entry point: parse arguments, build one frozen config, run the window or the headless terminal mode.

    python main.py                      # window if there is a display, else headless on the bundled demo
    python main.py --headless --source demo --ask "3=What do you see?" --duration 30 \\
        --transcript out.jsonl --srt out.srt

Headless mode prints the live conversation (questions, speech, silence, revisions) with stream-clock
timestamps and writes the transcript as it goes. Errors a user can cause get one sentence and a
non-zero exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engine.files import printable
from engine.options import CHOICES, LIMITS, is_whole


@dataclass(frozen=True)
class Question:
    at: float  # stream-clock seconds
    text: str


def lenient_text(s: str) -> tuple[str, str | None]:
    """Text from argv or a pipe that may not be UTF-8 (its bytes then arrive as surrogate escapes):
    read as Windows-1252 (Latin-1) instead, with a note saying so; None when it was fine."""
    try:
        s.encode("utf-8")
        return s, None
    except UnicodeEncodeError:
        raw = s.encode("utf-8", "surrogateescape")
    text = raw.decode("cp1252", "replace")
    return text, f"{text!r} was not UTF-8 text; it was read as Latin-1 (Windows-1252)."


def parse_ask(s: str) -> Question:
    """ "T=QUESTION" (T seconds on the source's clock) or just "QUESTION" (at 0)."""
    t, sep, text = s.partition("=")
    try:
        at = float(t) if sep else 0.0
    except ValueError:
        at, text = 0.0, s
    if not sep:
        text = s
    if not (0.0 <= at < 1e9):  # nan, inf and negative times
        raise argparse.ArgumentTypeError(
            f"the time in {printable(s)!r} must be a number of seconds from 0 up"
        )
    return Question(at, text)


def number(lo: float, hi: float, what: str, lo_open: bool = False):
    """An argparse type: a finite number in [lo, hi] ((lo, hi] with lo_open)."""

    def check(v: str) -> float:
        try:
            x = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{printable(v)!r} is not a number ({what})") from None
        if not (lo < x <= hi if lo_open else lo <= x <= hi):
            side = "above" if lo_open else "from"
            raise argparse.ArgumentTypeError(f"{what} must be {side} {lo:g} up to {hi:g}, not {v}")
        return x

    return check


def whole(lo: int, hi: int, what: str):
    """An argparse type: a whole number in [lo, hi]."""

    def check(v: str) -> int:
        try:
            x = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{printable(v)!r} is not a whole number ({what})") from None
        if not lo <= x <= hi:
            raise argparse.ArgumentTypeError(f"{what} must be from {lo} to {hi}, not {v}")
        return x

    return check


def limit(name: str):
    """The argparse type of session option `name`: its range from engine.options.LIMITS (the one
    table the app's settings read too)."""
    lo, hi, lo_open, what = LIMITS[name]
    return whole(int(lo), int(hi), what) if is_whole(name) else number(lo, hi, what, lo_open)


def device_name(v: str) -> str:
    import re

    if not re.fullmatch(r"cpu|mps|cuda(:\d{1,2})?", v):
        raise argparse.ArgumentTypeError(f"{printable(v)!r} is not a device; use cpu, cuda, cuda:N or mps")
    return v


def output_with(suffix: str):
    """An argparse type: an output file name that must end in `suffix` (checked before the run)."""

    def check(v: str) -> Path:
        if Path(v).suffix.lower() != suffix:
            raise argparse.ArgumentTypeError(f"{printable(v)!r} must be a file name ending in {suffix}")
        return Path(v)

    return check


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one sentence, no usage block
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


# What the headless demo asks of the bundled demo video (a procedural scene, seed 21): a count that
# changes, a reading of the display, a watch request, a description.
DEMO_QUESTIONS = [
    "2=How many objects are there?",
    "9=What number does the display show?",
    "14=Tell me when a black star appears.",
    "30=What do you see?",
]


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="moss-live", description="Live video assistant (two-channel video-language model).")
    p.add_argument("--headless", action="store_true", help="no window: print the live conversation")
    p.add_argument("--source", default="demo", help="demo | webcam[:N] | screen[:N[:l,t,w,h]] | PATH")
    p.add_argument(
        "--ask",
        action="append",
        type=parse_ask,
        default=[],
        metavar="T=QUESTION",
        help="ask QUESTION at second T",
    )
    p.add_argument(
        "--duration",
        type=number(0, 1e7, "the duration in seconds", True),
        default=None,
        help="stop after this many seconds",
    )
    p.add_argument("--transcript", type=Path, default=None, help="JSONL transcript (written as it goes)")
    p.add_argument("--srt", type=output_with(".srt"), default=None, help="SRT subtitles of the conversation")
    p.add_argument(
        "--vtt", type=output_with(".vtt"), default=None, help="WebVTT subtitles of the conversation"
    )
    p.add_argument("--model", default=None, help="model folder or hub id (default: the bundled model)")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", default=None, choices=[None, "float32", "bfloat16", "float16"])
    p.add_argument(
        "--int8", action="store_true", help="int8 weight-only text decoder (half the weight memory)"
    )
    p.add_argument(
        "--attention",
        choices=["sdpa", "flash"],
        default=None,
        help="attention kernels: PyTorch SDPA (default) or flash-attn 2/4 on a CUDA GPU (also MOSS_ATTENTION)",
    )
    p.add_argument(
        "--mode",
        choices=["moss", "stock"],
        default=None,
        help="run the checkpoint as MOSS-Video-Preview or stock Llama-3.2-Vision (default: what config.json says)",
    )
    p.add_argument(
        "--decoding",
        choices=["auto", "greedy", "sample"],
        default="auto",
        help="auto = what the checkpoint's authors use (its generation_config.json; greedy without one)",
    )
    p.add_argument(
        "--temperature",
        type=limit("temperature"),
        default=None,
        help="sampling temperature (overrides the checkpoint's)",
    )
    p.add_argument(
        "--top-k",
        type=limit("top_k"),
        default=None,
        help="sample from the k most likely tokens (0 = all)",
    )
    p.add_argument(
        "--top-p",
        type=limit("top_p"),
        default=None,
        help="sample from the smallest set of this probability",
    )
    p.add_argument(
        "--repetition-penalty",
        type=limit("repetition_penalty"),
        default=None,
        help="penalty for tokens already said",
    )
    p.add_argument("--seed", type=limit("seed"), default=0, help="sampling seed")
    p.add_argument(
        "--fps",
        type=limit("fps"),
        default=1.0,
        help="frames per second that enter the model",
    )
    p.add_argument(
        "--memory-frames",
        type=limit("memory_frames"),
        default=64,
        help="visual memory capacity (frames)",
    )
    p.add_argument(
        "--fast", action="store_true", help="replay files as fast as possible (no real-time pacing)"
    )
    p.add_argument(
        "--decode-step",
        choices=CHOICES["decode_step"],
        default="auto",
        help="how a decode step runs: auto (CUDA graph on a GPU, the folded CPU step on a CPU), static, cpu, eager",
    )
    p.add_argument(
        "--cpu-weights",
        choices=CHOICES["cpu_weights"],
        default="auto",
        help="the CPU step's weight copies (auto: int8 where bfloat16 is native, else float16)",
    )
    p.add_argument(
        "--compile-decode", action="store_true", help="torch.compile the GPU decode step (a minute per shape)"
    )
    p.add_argument("--local-only", action="store_true", help="never use the network")
    p.add_argument("--quiet-silence", action="store_true", help="do not print silence markers")
    return p


def has_display() -> bool:
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.attention:
        from engine import attention

        if msg := attention.choose(args.attention):
            print(msg, file=sys.stderr)
    if not args.headless and has_display():
        try:
            from app import run_gui
        except ImportError as e:
            print(f"The window cannot start ({e}); running headless.", file=sys.stderr)
        else:
            return exit_now(run_gui(args))
    return run_headless(args)


def exit_now(code: int) -> int:
    """Leave as soon as the window is closed. By then the session is stopped, its transcript closed and
    fsynced, and the settings saved; what is left is Python tearing down torch, Qt and a few thousand
    modules (about a second, measured), which nobody needs to wait for. Streams are flushed first."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def fmt(t: float) -> str:
    m, s = divmod(max(0.0, t), 60)
    return f"{int(m):02d}:{s:04.1f}"


class Printer:
    """Prints the conversation from events: one line per question, speech segment and revision."""

    def __init__(self, out=None, show_silence=True):
        # sys.stdout is looked up per printer, not bound at import (it may have been replaced since)
        self.out, self.show_silence = out if out is not None else sys.stdout, show_silence
        self.open_line = False
        self.last_silence_print = -1e9
        self.video_t = 0.0  # source time of the newest frame the model has seen
        self.broken = False  # the reader went away (stdout closed): nothing more is printed

    def __call__(self, ev) -> None:
        if self.broken:
            return
        try:
            self._print(ev)
        except BrokenPipeError:
            self.broken = True
            try:  # Python flushes stdout again at exit: point it at nothing so that cannot fail
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())
                os.close(devnull)
            except (OSError, ValueError, AttributeError):
                pass

    def _print(self, ev) -> None:
        from engine.bundled import display_name

        k = ev.kind
        if k == "FrameSeen":
            self.video_t = ev.source_t
        ev = _at_video_time(ev, self.video_t)
        if k == "SessionStart":
            note = "" if ev.trained else "  (no trained model is bundled: this is an untrained random model)"
            self._line(f"[{fmt(ev.t)}] session {ev.session_id} on {ev.source}{note}")
            if ev.mode:
                self._line(
                    f"[{fmt(ev.t)}] model: {display_name(ev.model)}, {ev.mode} mode, decoding: {ev.decoding}"
                )
        elif k == "TurnStart" and ev.turn > 0:
            self._line(f"[{fmt(ev.t)}] you: {ev.question}")
        elif k == "Revision":
            self._line(f"[{fmt(ev.t)}] assistant (revises its answer): ", end="")
            self.open_line = True
        elif k == "SpeechStart" and ev.revises is None:
            self._line(f"[{fmt(ev.t)}] assistant: ", end="")
            self.open_line = True
        elif k == "Token":
            self.out.write(printable(ev.text))
            self.out.flush()
        elif k == "SpeechEnd":
            self.out.write(" [interrupted]\n" if ev.interrupted else "\n")
            self.open_line = False
        elif k == "Silence" and self.show_silence and ev.t - self.last_silence_print >= 5.0:
            self._line(f"[{fmt(ev.t)}] (watching...)")
            self.last_silence_print = ev.t
        elif k in ("Compacted", "Unfamiliar"):
            self._line(f"[{fmt(ev.t)}] note: {ev.message}")
        elif k == "Error":
            self._line(f"[{fmt(ev.t)}] error: {ev.message}")
        elif k == "SessionEnd":
            self._line(f"[{fmt(ev.t)}] session ended ({ev.reason})")

    def _line(self, s: str, end: str = "\n") -> None:
        if self.open_line:
            self.out.write("\n")
            self.open_line = False
        self.out.write(printable(s) + end)
        self.out.flush()


def _at_video_time(ev, video_t: float):
    """Print times on the video's clock: the same numbers live and replayed with --fast."""
    import dataclasses

    return dataclasses.replace(ev, t=video_t) if ev.kind != "SessionStart" else ev


class _Ended(Exception):
    """SIGTERM (or SIGHUP) arrived: end the run as Ctrl-C does."""

    def __init__(self, signum: int):
        self.signum = signum


def say(message: str) -> None:
    """One line to stderr; a closed stderr is not an error of ours."""
    try:
        print(message, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def plan_outputs(args) -> tuple[Path | None, list[Path]] | str:
    """The transcript and subtitle files, checked before anything runs: (transcript, subtitles), or
    the one sentence that stops the run. A file this app did not write is never touched: the output
    goes to a free name beside it, and the user is told."""
    from engine.files import free_name
    from engine.transcript import transcript_problem

    transcript = args.transcript
    if transcript is not None:
        if transcript.is_dir():
            return f"--transcript {printable(str(transcript))} is a folder; give a file name."
        problem = transcript_problem(transcript)
        if problem:
            transcript = free_name(transcript)
            say(f"note: {printable(problem)} The transcript goes to {printable(str(transcript))}.")
    subtitles = []
    for path in (args.srt, args.vtt):
        if path is None:
            continue
        if path.is_dir():
            return f"{printable(str(path))} is a folder; give the subtitles a file name."
        if os.path.lexists(path):
            new = free_name(path)
            say(
                f"note: {printable(str(path))} exists and is left as it is; the subtitles go to {printable(str(new))}."
            )
            path = new
        subtitles.append(path)
    return transcript, subtitles


def run_headless(args) -> int:
    import signal

    from engine import events as E
    from engine.loading import LoadError, load_checkpoint
    from engine.options import SessionConfig
    from engine.session import Session

    asks = args.ask or ([parse_ask(q) for q in DEMO_QUESTIONS] if args.source == "demo" else [])
    questions = []
    for q in sorted(asks, key=lambda q: q.at):
        text, note = lenient_text(q.text)
        if note:
            say(f"note: {note}")
        questions.append(Question(q.at, text))
    outputs = plan_outputs(args)
    if isinstance(outputs, str):
        say(f"error: {outputs}")
        return 2
    transcript, subtitles = outputs
    try:
        if (args.int8 or args.mode) and not args.model:
            from engine.bundled import MODEL_DIR

            args.model = str(MODEL_DIR)
        if args.model:
            ckpt = load_checkpoint(
                args.model,
                device=args.device,
                dtype=args.dtype,
                local_only=args.local_only,
                quantize="int8" if args.int8 else None,
                mode=args.mode,
            )
        else:
            from engine.bundled import load_default_checkpoint

            ckpt = load_default_checkpoint(device=args.device, dtype=args.dtype)
    except LoadError as e:
        say(f"error: {printable(str(e))}")
        return 2
    cfg = SessionConfig(
        fps=args.fps,
        memory_frames=args.memory_frames,
        realtime=not args.fast,
        transcript_dir=user_sessions_dir() if transcript is None else None,
        transcript_path=transcript,
        decoding=args.decoding,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        decode_step=args.decode_step,
        cpu_weights=args.cpu_weights,
        compile_decode=args.compile_decode,
    )
    try:
        session = Session(ckpt, config=cfg)
    except ValueError as e:
        say(f"error: {e}")
        return 2
    printer = Printer(show_silence=not args.quiet_silence)
    events = []
    code = 0

    def show(evs) -> None:
        nonlocal code
        for ev in evs:
            events.append(ev)
            printer(ev)
            if isinstance(ev, E.Error):
                code = code or (2 if ev.where in ("source", "input") else 1)

    def on_signal(signum, frame):
        raise _Ended(signum)

    handled = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {s: signal.signal(s, on_signal) for s in handled}
    for q in questions:  # asked on the source's clock: the same frame live or replayed with --fast
        session.ask(q.text, at=q.at)
    try:
        session.start(args.source)
        while True:
            now = session.clock()
            evs = session.poll()
            show(evs)
            if any(isinstance(ev, E.SessionEnd) for ev in evs):
                break
            if printer.broken:  # stdout was closed (| head): nobody reads on; end quietly
                session.stop(reason="output closed")
                code = 128 + 13  # as a process ended by SIGPIPE
                continue
            if args.duration is not None and now >= args.duration:
                session.stop(reason="duration")
                continue
            time.sleep(0.02)
    except (KeyboardInterrupt, _Ended) as e:
        for sig in [signal.SIGINT, *handled]:  # a second Ctrl-C while closing: no traceback
            signal.signal(sig, signal.SIG_IGN)
        session.stop(reason="stopped")
        code = 128 + (e.signum if isinstance(e, _Ended) else signal.SIGINT)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    session.wait_closed(2.0)
    show(session.poll())  # what came after the end (a transcript that could not be finished)
    if session.transcript_path:
        say(f"transcript: {printable(str(session.transcript_path))}")
    for path in subtitles:
        from engine.export import write_subtitles

        try:
            write_subtitles(events, path)
        except OSError as e:
            say(f"error: the subtitles could not be written to {printable(str(path))} ({e.strerror or e}).")
            code = code or 1
    return code


def user_sessions_dir() -> Path:
    try:
        from platformdirs import user_data_dir

        return Path(user_data_dir("moss-live", appauthor=False)) / "sessions"
    except ImportError:
        return Path.home() / ".moss-live" / "sessions"


if __name__ == "__main__":
    sys.exit(main())

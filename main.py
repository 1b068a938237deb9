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


@dataclass(frozen=True)
class Question:
    at: float  # stream-clock seconds
    text: str


def parse_ask(s: str) -> Question:
    t, sep, text = s.partition("=")
    try:
        at = float(t) if sep else 0.0
    except ValueError:
        at, text = 0.0, s
    if not sep:
        text = s
    return Question(at, text)


# What the headless demo asks of the bundled demo video (a procedural scene, seed 21): a count that
# changes, a reading of the display, a watch request, a description.
DEMO_QUESTIONS = [
    "2=How many objects are there?",
    "9=What number does the display show?",
    "14=Tell me when a black star appears.",
    "30=What do you see?",
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="moss-live", description="Live video assistant (two-channel video-language model)."
    )
    p.add_argument("--headless", action="store_true", help="no window: print the live conversation")
    p.add_argument("--source", default="demo", help="demo | webcam[:N] | screen[:N[:l,t,w,h]] | PATH")
    p.add_argument(
        "--ask", action="append", default=[], metavar="T=QUESTION", help="ask QUESTION at second T"
    )
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--transcript", type=Path, default=None, help="JSONL transcript (written as it goes)")
    p.add_argument("--srt", type=Path, default=None, help="SRT subtitles of the conversation")
    p.add_argument("--vtt", type=Path, default=None, help="WebVTT subtitles of the conversation")
    p.add_argument("--model", default=None, help="model folder or hub id (default: the bundled model)")
    p.add_argument("--device", default="cpu")
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
        "--temperature", type=float, default=None, help="sampling temperature (overrides the checkpoint's)"
    )
    p.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens (0 = all)")
    p.add_argument(
        "--top-p", type=float, default=None, help="sample from the smallest set of this probability"
    )
    p.add_argument("--repetition-penalty", type=float, default=None, help="penalty for tokens already said")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--fps", type=float, default=1.0, help="frames per second that enter the model")
    p.add_argument("--memory-frames", type=int, default=64, help="visual memory capacity (frames)")
    p.add_argument(
        "--fast", action="store_true", help="replay files as fast as possible (no real-time pacing)"
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
            return run_gui(args)
    return run_headless(args)


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

    def __call__(self, ev) -> None:
        k = ev.kind
        if k == "FrameSeen":
            self.video_t = ev.source_t
        ev = _at_video_time(ev, self.video_t)
        if k == "SessionStart":
            note = "" if ev.trained else "  (no trained model is bundled: this is an untrained random model)"
            self._line(f"[{fmt(ev.t)}] session {ev.session_id} on {ev.source}{note}")
            if ev.mode:
                self._line(
                    f"[{fmt(ev.t)}] model: {model_name(ev.model)}, {ev.mode} mode, decoding: {ev.decoding}"
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
            self.out.write(ev.text)
            self.out.flush()
        elif k == "SpeechEnd":
            self.out.write(" [interrupted]\n" if ev.interrupted else "\n")
            self.open_line = False
        elif k == "Silence" and self.show_silence and ev.t - self.last_silence_print >= 5.0:
            self._line(f"[{fmt(ev.t)}] (watching...)")
            self.last_silence_print = ev.t
        elif k == "Error":
            self._line(f"[{fmt(ev.t)}] error: {ev.message}")
        elif k == "SessionEnd":
            self._line(f"[{fmt(ev.t)}] session ended ({ev.reason})")

    def _line(self, s: str, end: str = "\n") -> None:
        if self.open_line:
            self.out.write("\n")
            self.open_line = False
        self.out.write(s + end)
        self.out.flush()


def model_name(source: str) -> str:
    from engine.bundled import MODEL_DIR

    if not source or Path(source).resolve() == MODEL_DIR.resolve():
        return "the bundled model"
    return source


def _at_video_time(ev, video_t: float):
    """Print times on the video's clock: the same numbers live and replayed with --fast."""
    import dataclasses

    return dataclasses.replace(ev, t=video_t) if ev.kind != "SessionStart" else ev


def run_headless(args) -> int:
    from engine import events as E
    from engine.loading import LoadError, load_model
    from engine.session import Session, SessionConfig

    asks = args.ask or (DEMO_QUESTIONS if args.source == "demo" else [])
    questions = sorted((parse_ask(a) for a in asks), key=lambda q: q.at)
    try:
        if (args.int8 or args.mode) and not args.model:
            from engine.bundled import MODEL_DIR

            args.model = str(MODEL_DIR)
        if args.model:
            model = load_model(
                args.model,
                device=args.device,
                dtype=args.dtype,
                local_only=args.local_only,
                quantize="int8" if args.int8 else None,
                mode=args.mode,
            )
            model.trained = True
        else:
            from engine.bundled import load_default_model

            model = load_default_model(device=args.device, dtype=args.dtype)
    except LoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    transcript_dir = None
    if args.transcript is None:
        transcript_dir = user_sessions_dir()
    cfg = SessionConfig(
        fps=args.fps,
        memory_frames=args.memory_frames,
        realtime=not args.fast,
        transcript_dir=transcript_dir,
        transcript_path=args.transcript,
        decoding=args.decoding,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
    try:
        session = Session(model, config=cfg)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    printer = Printer(show_silence=not args.quiet_silence)
    events = []
    code = 0
    for q in questions:  # asked on the source's clock: the same frame live or replayed with --fast
        session.ask(q.text, at=q.at)
    session.start(args.source)
    try:
        while True:
            now = session.clock()
            done = False
            for ev in session.poll():
                events.append(ev)
                printer(ev)
                if isinstance(ev, E.Error):
                    code = code or (2 if ev.where in ("source", "input") else 1)
                if isinstance(ev, E.SessionEnd):
                    done = True
            if done:
                break
            if args.duration is not None and now >= args.duration:
                session.stop(reason="duration")
                continue
            time.sleep(0.02)
    except KeyboardInterrupt:
        session.stop(reason="stopped")
        for ev in session.poll():
            events.append(ev)
            printer(ev)
    if session.transcript_path:
        print(f"transcript: {session.transcript_path}", file=sys.stderr)
    for path in (args.srt, args.vtt):
        if path is not None:
            from engine.transcript import write_subtitles

            write_subtitles(events, path)
    return code


def user_sessions_dir() -> Path:
    try:
        from platformdirs import user_data_dir

        return Path(user_data_dir("moss-live", appauthor=False)) / "sessions"
    except ImportError:
        return Path.home() / ".moss-live" / "sessions"


if __name__ == "__main__":
    sys.exit(main())

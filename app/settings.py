"""User settings: one frozen dataclass, read from and written to a readable YAML file, and the folders.

Owns the settings schema (names, defaults, allowed values), validation with messages a user can act
on (a malformed file names the line and the field, and the app falls back to defaults for what is
wrong), and where user data lives (platformdirs: config, sessions, models, logs, runtime lock).
It knows nothing of Qt, and of the engine only its bounded file reader (`engine.files`): the window and the
engine adapter read a `Settings`.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.options import CHOICES, LIMITS, is_whole

APP_NAME = "moss-live"
SETTINGS_FILE = "settings.yaml"


@dataclass(frozen=True)
class Settings:
    model: str = ""  # model folder or hub id; "" = the bundled small model
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:N" or "mps"
    # "auto" (float32 on CPU, bfloat16 on GPU), "float32", "bfloat16", "float16", or "int8" (int8
    # weight-only text decoder, engine.quant; the rest at "auto")
    dtype: str = "auto"
    fps: float = 1.0  # frames per second that enter the model (the published model saw 1 fps)
    memory_frames: int = 64  # visual memory capacity in frames
    max_context: int = 4096  # text context in tokens
    mode: str = "auto"  # how to run the checkpoint: "auto" (what its config.json says), "moss" or "stock"
    # "auto" (what the checkpoint's authors use: its generation_config.json, greedy without one),
    # "greedy" or "sample"
    decoding: str = "auto"
    temperature: float = 0.0  # sampling temperature; 0 = the checkpoint's own
    decode_step: str = "auto"  # how a decode step runs (engine.options.CHOICES): auto, static, cpu, eager
    cpu_weights: str = "auto"  # the CPU step's weight copies: auto, int8, float16
    compile_decode: bool = False  # torch.compile the GPU decode step
    system_prompt: str = ""  # "" = the real-time system prompt the model was trained with
    local_only: bool = False  # True blocks every network use (no hub downloads)
    voice: bool = False  # listen to the microphone (push-to-talk, and barge-in when always listening)
    always_listen: bool = False  # voice-activity barge-in without holding the push-to-talk key
    speak_answers: bool = False  # read answers aloud through the text-to-speech engine
    push_to_talk_key: str = "F8"  # hold to talk (a Qt key name such as "F8" or "Ctrl+Space")
    recognizer: str = "auto"  # "auto", "pocketsphinx", "whisper" or "off"
    whisper_model: str = ""  # folder of a Whisper checkpoint (transformers format), used when set
    tts: str = "auto"  # "auto", "espeak-ng", "pyttsx3" or "off"
    theme: str = "system"  # "system", "light" or "dark"
    font_size: int = 10  # points
    last_source: str = "demo"  # the source picked last time (a spec string)
    screen_monitor: int = 1  # last monitor captured (mss numbering, 1..N)
    screen_region: tuple[int, int, int, int] | None = None  # last region (left, top, w, h) on it
    first_run_done: bool = False  # the hardware report was shown once
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # never written

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


# ---- validation ------------------------------------------------------------------------------------

Check = Callable[[Any], Any]  # returns the normalised value or raises ValueError(why)


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise ValueError("must be true or false")


def _number(lo: float, hi: float) -> Check:
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"must be a number between {lo:g} and {hi:g}")
        if not lo <= float(v) <= hi:
            raise ValueError(f"must be between {lo:g} and {hi:g}")
        return float(v)

    return check


def _integer(lo: int, hi: int) -> Check:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"must be a whole number between {lo} and {hi}")
        if not lo <= v <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return v

    return check


def _text(v: Any) -> str:
    if v is None:
        return ""
    if not isinstance(v, str):
        raise ValueError("must be text")
    return v


def _choice(*options: str) -> Check:
    def check(v: Any) -> str:
        if not isinstance(v, str) or v not in options:
            raise ValueError("must be one of " + ", ".join(options))
        return v

    return check


def _engine_range(name: str) -> Check:
    """The range the engine accepts for session option `name` (engine.options.LIMITS: the table the
    command line reads too)."""
    lo, hi, _, _ = LIMITS[name]
    return _integer(int(lo), int(hi)) if is_whole(name) else _number(lo, hi)


def _device(v: Any) -> str:
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("auto", "cpu", "cuda", "mps") or (s.startswith("cuda:") and s[5:].isdigit()):
            return s
    raise ValueError("must be auto, cpu, cuda, cuda:N or mps")


def _region(v: Any) -> tuple[int, int, int, int] | None:
    if v is None:
        return None
    if (
        isinstance(v, (list, tuple))
        and len(v) == 4
        and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
    ):
        if v[2] <= 0 or v[3] <= 0:
            raise ValueError("width and height must be positive")
        return tuple(v)  # type: ignore[return-value]
    raise ValueError("must be [left, top, width, height] (whole numbers) or null")


CHECKS: dict[str, Check] = {
    "model": _text,
    "device": _device,
    "dtype": _choice("auto", "float32", "bfloat16", "float16", "int8"),
    "fps": _engine_range("fps"),
    "memory_frames": _engine_range("memory_frames"),
    "max_context": _engine_range("max_context"),
    "mode": _choice("auto", "moss", "stock"),
    "decoding": _choice(*CHOICES["decoding"]),
    "temperature": _engine_range("temperature"),
    "decode_step": _choice(*CHOICES["decode_step"]),
    "cpu_weights": _choice(*CHOICES["cpu_weights"]),
    "compile_decode": _bool,
    "system_prompt": _text,
    "local_only": _bool,
    "voice": _bool,
    "always_listen": _bool,
    "speak_answers": _bool,
    "push_to_talk_key": _text,
    "recognizer": _choice("auto", "pocketsphinx", "whisper", "off"),
    "whisper_model": _text,
    "tts": _choice("auto", "espeak-ng", "pyttsx3", "off"),
    "theme": _choice("system", "light", "dark"),
    "font_size": _integer(6, 40),
    "last_source": _text,
    "screen_monitor": _integer(0, 64),
    "screen_region": _region,
    "first_run_done": _bool,
}


def validate(
    values: dict[str, Any], lines: dict[str, int] | None = None, where: str = "settings"
) -> tuple[Settings, list[str]]:
    """Settings from a plain dict; each bad or unknown field is reported and falls back to its default.

    `lines` maps field names to their line in the file, so messages can say where to look.
    """
    lines = lines or {}
    messages: list[str] = []
    good: dict[str, Any] = {}

    def at(name: str) -> str:
        return f"{where} line {lines[name]}" if name in lines else where

    for name, value in values.items():
        check = CHECKS.get(name)
        if check is None:
            messages.append(f"{at(name)}: unknown setting '{name}' was ignored.")
            continue
        try:
            good[name] = check(value)
        except ValueError as e:
            default = getattr(Settings(), name)
            messages.append(f"{at(name)}: '{name}' {e} (found {value!r}); using the default {default!r}.")
    return Settings(**good), messages


def to_dict(s: Settings) -> dict[str, Any]:
    d = {f.name: getattr(s, f.name) for f in dataclasses.fields(s) if f.name != "extra"}
    if d["screen_region"] is not None:
        d["screen_region"] = list(d["screen_region"])
    return d


# ---- the file --------------------------------------------------------------------------------------


def _key_lines(text: str) -> dict[str, int]:
    """Line number (1-based) of each top-level key, from YAML's own node marks."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


MAX_SETTINGS_BYTES = 256 * 1024  # a settings file is a few hundred bytes
MAX_DEPTH = 8  # settings are flat 'name: value' lines (a region is one list)


class _BoundedLoader(yaml.SafeLoader):
    """safe_load without the two ways a small file can take minutes and gigabytes: aliases (the
    'billion laughs' bomb expands a few lines of anchors into billions of nodes) and deep nesting.
    Settings never need either."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in settings", event.start_mark
            )
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"settings nest deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_settings(path: Path) -> tuple[Settings, list[str]]:
    """Read the settings file; a missing file gives defaults silently, a bad one defaults plus messages."""
    from engine.files import FileProblem, read_bounded

    if not os.path.lexists(path):
        return Settings(), []
    try:
        text = read_bounded(path, MAX_SETTINGS_BYTES, "settings file").decode("utf-8")
    except FileProblem as e:
        return Settings(), [f"{e} Using default settings."]
    except UnicodeDecodeError as e:
        return Settings(), [f"Cannot read {path} ({e}); using default settings."]
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"
        # An unclosed bracket or quote is noticed lines later; the context mark says where it began.
        start = getattr(e, "context_mark", None) or mark
        field_hint = _field_on_line(text, start.line if start is not None else -1)
        about = f" (in the '{field_hint}' setting"
        if start is not None and mark is not None and start.line != mark.line:
            about += f", which starts on line {start.line + 1}"
        about = about + ")" if field_hint else ""
        return Settings(), [
            f"{path.name} is not valid YAML at {where}{about}: {problem}. Using default settings; "
            "fix the file or save settings again to replace it."
        ]
    if data is None:
        return Settings(), []
    if not isinstance(data, dict):
        return Settings(), [f"{path.name} must hold 'name: value' lines; using default settings."]
    return validate(data, _key_lines(text), where=path.name)


def _field_on_line(text: str, line: int) -> str | None:
    """The top-level key written on `line` (0-based) or on the nearest line above it."""
    rows = text.splitlines()
    for i in range(min(line, len(rows) - 1), -1, -1):
        row = rows[i]
        if row and not row[0].isspace() and ":" in row and not row.lstrip().startswith("#"):
            return row.split(":", 1)[0].strip().strip("'\"") or None
    return None


HEADER = """\
# moss-live settings. Edit here or in the app (Ctrl+,). Unknown or invalid values fall back to the
# defaults and the app says which line was wrong.
"""


def save_settings(s: Settings, path: Path) -> None:
    """Write atomically (a temporary file then a rename) so a crash never leaves half a file."""
    from engine.files import write_text_atomic

    body = yaml.safe_dump(to_dict(s), sort_keys=False, allow_unicode=True, default_flow_style=None)
    write_text_atomic(path, HEADER + body)


# ---- folders ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppPaths:
    config: Path  # settings.yaml
    sessions: Path  # one JSONL transcript per session
    models: Path  # downloaded or user-placed models
    logs: Path
    runtime: Path  # the single-instance lock

    @property
    def settings_file(self) -> Path:
        return self.config / SETTINGS_FILE

    @classmethod
    def from_platform(cls) -> AppPaths:
        """The platform's folders (XDG on Linux, AppData on Windows, Library on macOS).

        MOSS_LIVE_HOME puts everything under one folder instead (portable installs, tests).
        """
        home = os.environ.get("MOSS_LIVE_HOME")
        if home:
            return cls.under(Path(home))
        import platformdirs

        dirs = platformdirs.PlatformDirs(APP_NAME, appauthor=False)
        with warnings.catch_warnings():  # no XDG_RUNTIME_DIR: platformdirs falls back to /tmp, which is fine
            warnings.simplefilter("ignore")
            runtime = Path(dirs.user_runtime_dir) if os.name != "nt" else Path(dirs.user_cache_dir)
        return cls(
            config=Path(dirs.user_config_dir),
            sessions=Path(dirs.user_data_dir) / "sessions",
            models=Path(dirs.user_data_dir) / "models",
            logs=Path(dirs.user_log_dir),
            runtime=runtime,
        )

    @classmethod
    def under(cls, root: Path) -> AppPaths:
        root = Path(root)
        return cls(root / "config", root / "sessions", root / "models", root / "logs", root / "run")

    def ensure(self) -> AppPaths:
        for p in (self.config, self.sessions, self.models, self.logs, self.runtime):
            p.mkdir(parents=True, exist_ok=True)
        return self

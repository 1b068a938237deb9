"""The app's one door to the engine: load a model and open sessions, behind a small interface.

Owns what the window may call on a session (`SessionLike`), what a backend must offer (`Backend`:
`load` in a worker thread, `new_session` in the GUI thread), and `EngineBackend`, the adapter to the
real runtime (engine.loading.load_checkpoint / engine.bundled / engine.session). The model object is an opaque
handle here: the app never looks inside it (no tensors in app/). Download progress from the hub is
turned into (fraction, "12.3 MB/s, ETA 0:42") reports through a tqdm subclass, because tqdm's class
is what huggingface_hub accepts. It knows nothing of Qt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from app.settings import Settings
from engine import events as E

Report = Callable[[float, str], None]  # (fraction 0..1, or -1 when unknown; one line of text)


class SessionLike(Protocol):
    session_id: str
    transcript_path: Path | None

    def start(self, source: Any) -> None: ...
    def ask(self, text: str) -> None: ...
    def stop_answer(self) -> None: ...
    def poll(self) -> list[E.Event]: ...
    def stop(self, timeout: float = 1.0) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def latest_frame(self) -> np.ndarray | None: ...


@dataclass(frozen=True)
class LoadedModel:
    handle: Any  # the engine's Checkpoint, opaque to the app
    name: str  # what to show: "bundled model", a folder, a hub id
    device: str
    trained: bool = True


class Backend(Protocol):
    def load(self, settings: Settings, report: Report) -> LoadedModel:
        """Runs in a worker thread; may be slow; raises with a message a user can act on."""
        ...

    def new_session(self, model: LoadedModel, settings: Settings, transcript_dir: Path | None) -> SessionLike:
        """Runs in the GUI thread; must return at once."""
        ...


class LoadFailed(Exception):
    """The model could not be loaded; the message is one sentence for the user."""


def resolve_device(setting: str) -> str:
    if setting != "auto":
        return setting
    from app.hardware import best_device, probe

    return best_device(probe())


class EngineBackend:
    """The real runtime."""

    def load(self, settings: Settings, report: Report) -> LoadedModel:
        report(-1.0, "Looking at the hardware…")
        device = resolve_device(settings.device)
        quantize = "int8" if settings.dtype == "int8" else None
        dtype = None if settings.dtype in ("auto", "int8") else settings.dtype
        from engine.loading import LoadError

        try:
            if not settings.model:
                report(-1.0, f"Loading the bundled model on {device}…")
                from engine.bundled import load_default_checkpoint

                handle = load_default_checkpoint(device=device, dtype=dtype, quantize=quantize)
                name = "bundled model" if handle.trained else "untrained stand-in model"
            else:
                report(-1.0, f"Loading {settings.model} on {device}…")
                from engine.loading import load_checkpoint

                handle = load_checkpoint(
                    settings.model,
                    device=device,
                    dtype=dtype,
                    local_only=settings.local_only,
                    progress=download_progress_class(report),
                    quantize=quantize,
                    mode=None if settings.mode == "auto" else settings.mode,
                )
                name = settings.model
        except LoadError as e:
            raise LoadFailed(str(e)) from None
        except (OSError, RuntimeError, ValueError) as e:  # e.g. CUDA missing, out of memory, bad dtype
            raise LoadFailed(f"The model could not be loaded on {device}: {e}") from None
        report(1.0, f"Model ready on {device}.")
        return LoadedModel(handle, name, device, handle.trained)

    def new_session(self, model: LoadedModel, settings: Settings, transcript_dir: Path | None) -> SessionLike:
        from engine.session import Session

        return Session(model.handle, config=session_config(settings, transcript_dir))


def session_config(settings: Settings, transcript_dir: Path | None):
    """The engine's SessionConfig of the window's settings (the one options type; engine.options)."""
    from engine.options import SessionConfig

    return SessionConfig(
        fps=settings.fps,
        memory_frames=settings.memory_frames,
        system_prompt=settings.system_prompt or None,  # None: the model's own prompt
        max_context=settings.max_context,
        realtime=True,
        decoding=settings.decoding,
        temperature=settings.temperature or None,  # 0: the checkpoint's own
        decode_step=settings.decode_step,
        cpu_weights=settings.cpu_weights,
        compile_decode=settings.compile_decode,
        transcript_dir=transcript_dir,
    )


def download_progress_class(report: Report) -> type:
    """A tqdm subclass that sends byte progress (with MB/s and ETA) to `report` instead of a terminal."""
    from tqdm.auto import tqdm

    class _Reported(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("file", None)
            kwargs["disable"] = False
            self._t_start = time.monotonic()
            super().__init__(*args, file=_Null(), **kwargs)

        def display(self, msg: Any = None, pos: Any = None) -> bool:
            report(*describe_progress(self.n, self.total, time.monotonic() - self._t_start, self.unit))
            return True

    return _Reported


class _Null:
    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass


def describe_progress(done: float, total: float | None, elapsed: float, unit: str = "B") -> tuple[float, str]:
    """(fraction, "340.0 of 900.0 MB, 12.3 MB/s, ETA 0:45") for a download; fraction -1 when unknown."""
    if unit != "B":
        frac = done / total if total else -1.0
        return frac, f"{int(done)} of {int(total)} files" if total else f"{int(done)} files"
    mb, rate = done / 2**20, done / 2**20 / elapsed if elapsed > 0 else 0.0
    if not total:
        return -1.0, f"{mb:.1f} MB, {rate:.1f} MB/s"
    left = (total - done) / 2**20 / rate if rate > 0 else float("inf")
    eta = "?" if left == float("inf") else f"{int(left // 60)}:{int(left % 60):02d}"
    return done / total, f"{mb:.1f} of {total / 2**20:.1f} MB, {rate:.1f} MB/s, ETA {eta}"

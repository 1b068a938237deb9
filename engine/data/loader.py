"""Training records (the MOSS / LLaMA-Factory sharegpt format) -> token, label and frame tensors.

Owns: the chat-template tokenisation of a record, the expansion of frame markers into `<|image|>`
tokens, the label mask and loss weights, frame-jitter augmentation, truncation, where each frame
comes from (`FrameRef`), reading frames from video files, padding a batch, and a torch Dataset over
a record file.

It knows nothing of the model or of vision preprocessing (frames leave as uint8 RGB, or through the
caller's `frame_transform`), nor of how procedural worlds render frames (they plug in a frame
provider).

Record kinds (see shared/data/moss-demo):
- real-time SFT: `videos[0]` is `[RealTime QA][INFO]{"video_path", "time_info"}` + placeholders;
  each `<|video|>` (in assistant turns) is one frame, at the time given by `time_info`.
- offline SFT: `videos` are files; a `<|video|>` (in the user turn) stands for all frames sampled
  from its video at `fps`, at most `max_frames`.
- pretrain / captions: `images` are files; each `<|image|>` is one frame (the image).

Labels are aligned with `input_ids` (Hugging Face convention, not shifted): `labels[t]` is the target
of the token at t, so the trainer compares `logits[:, :-1]` with `labels[:, 1:]`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from engine import protocol
from engine.tokenizer import Tokenizer

IGNORE = -100  # label of a token that carries no loss (torch cross_entropy's ignore_index)

REALTIME_INFO = "[RealTime QA][INFO]"

FrameRef = tuple[str, float]  # (video/image path or world key as written in the record, time in s)

_MARKERS = re.compile(f"({re.escape(protocol.VIDEO)}|{re.escape(protocol.IMAGE)})")
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class DataConfig:
    cutoff_len: int = 4096  # tokens kept per record (pretrain / real-time 4096, offline SFT 8192)
    fps: float = 1.0  # frame sampling rate of offline videos (pretrain used 2)
    max_frames: int = 256  # frames sampled from one offline video at most
    jitter_p: float = 0.5  # probability that a frame swaps with the speech token before it
    silence_weight: float = 1.0  # loss weight of <|silence|> labels (the reference option is 0.1)


@dataclass(frozen=True, eq=False)  # eq=False: tensors do not compare to a bool
class Sample:
    input_ids: torch.Tensor  # (T,) int64
    labels: torch.Tensor  # (T,) int64, IGNORE where no loss
    loss_weights: torch.Tensor  # (T,) float32, 0 where labels == IGNORE
    frame_refs: list[FrameRef]  # (F,) one per <|image|> token, in stream order
    image_positions: torch.Tensor  # (F,) int64, index of each frame's <|image|> in input_ids
    frames: Any = None  # (F, H, W, 3) uint8 array, or whatever frame_transform made of it; None = not loaded


@dataclass(frozen=True, eq=False)
class Batch:
    input_ids: torch.Tensor  # (B, T) int64, right-padded with pad_id; T = longest sample
    labels: torch.Tensor  # (B, T) int64, IGNORE on padding
    loss_weights: torch.Tensor  # (B, T) float32, 0 on padding
    attention_mask: torch.Tensor  # (B, T) bool, True on real tokens
    image_positions: torch.Tensor  # (sum F,) int64, per-sample positions concatenated
    frame_counts: torch.Tensor  # (B,) int64, frames of each sample (split image_positions/frames)
    frame_refs: list[list[FrameRef]]  # per sample
    frames: torch.Tensor | None  # (sum F, ...) frames concatenated in sample order, None if not loaded


class FrameProvider(Protocol):
    def __call__(self, record: dict, n_frames: int) -> np.ndarray:
        """The record's first `n_frames` frames in stream order, (n_frames, H, W, 3) uint8 RGB."""
        ...


# ---- where frames come from ---------------------------------------------------------------------


def is_realtime(record: dict) -> bool:
    videos = record.get("videos") or []
    return bool(videos) and isinstance(videos[0], str) and videos[0].startswith(REALTIME_INFO)


def frame_refs(
    record: dict, cfg: DataConfig = DataConfig(), video_seconds: Callable[[str], float] | None = None
) -> list[list[FrameRef]]:
    """Frames of each frame marker (`<|video|>` / `<|image|>`), markers in message order.

    `video_seconds(path)` gives an offline video's duration; only offline records need it.
    """
    markers = [m for msg in record["messages"] for m in _MARKERS.findall(msg["content"])]
    videos = record.get("videos") or []
    images = record.get("images") or []
    if is_realtime(record):
        info = json.loads(videos[0][len(REALTIME_INFO) :])
        times = [_seconds(t) for t in info["time_info"]]
        if protocol.IMAGE in markers:
            raise ValueError("a real-time record marks frames with <|video|>, found <|image|>")
        if len(videos) != len(markers) or len(times) < len(markers):
            raise ValueError(
                f"real-time record of {info['video_path']}: {len(markers)} <|video|> markers but "
                f"{len(videos)} videos entries and {len(times)} time_info entries"
            )
        return [[(info["video_path"], times[i])] for i in range(len(markers))]

    n_video = markers.count(protocol.VIDEO)
    n_image = len(markers) - n_video
    if n_video != len(videos) or n_image != len(images):
        raise ValueError(
            f"record has {n_video} <|video|> and {n_image} <|image|> markers but "
            f"{len(videos)} videos and {len(images)} images"
        )
    out: list[list[FrameRef]] = []
    vi = ii = 0
    for m in markers:
        if m == protocol.IMAGE:
            out.append([(images[ii], 0.0)])
            ii += 1
            continue
        if video_seconds is None:
            raise ValueError("an offline video record needs video durations: pass video_seconds")
        path = videos[vi]
        vi += 1
        out.append([(path, t) for t in sample_times(video_seconds(path), cfg.fps, cfg.max_frames)])
    return out


def sample_times(duration: float, fps: float, max_frames: int) -> list[float]:
    """Times (s) of the frames sampled from a video: every 1/fps s, spread wider to fit max_frames."""
    n = max(1, min(max_frames, math.floor(duration * fps + 1e-6)))
    step = max(1.0 / fps, duration / max_frames)
    return [k * step for k in range(n)]


def _seconds(stamp: str) -> float:
    """'mm:ss' or 'hh:mm:ss' (or plain seconds) -> seconds."""
    s = 0.0
    for part in str(stamp).split(":"):
        s = s * 60 + float(part)
    return s


class VideoFrames:
    """Default frame provider: reads frames from video and image files with OpenCV.

    Paths in records are resolved against `root` (the folder the record file's paths are relative
    to). `size`, if given, letterboxes every frame into size x size (aspect kept, zero padding
    bottom/right, like the vision preprocessing), so that frames of different videos can be batched.
    """

    def __init__(self, root: str | Path, cfg: DataConfig = DataConfig(), size: int | None = None):
        self.root = Path(root)
        self.cfg = cfg
        self.size = size
        self._durations: dict[str, float] = {}

    def resolve(self, path: str) -> Path:
        p = Path(path)
        p = p if p.is_absolute() else self.root / p
        if not p.is_file():
            raise FileNotFoundError(f"frame source {path} not found (looked for {p}; data root {self.root})")
        return p

    def seconds(self, path: str) -> float:
        """Duration of a video file, cached (frame count / fps from the container)."""
        if path not in self._durations:
            import cv2  # local: importing the loader must not need OpenCV until frames are read

            cap = cv2.VideoCapture(str(self.resolve(path)))
            try:
                fps = cap.get(cv2.CAP_PROP_FPS)
                count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            finally:
                cap.release()
            if not fps or fps <= 0 or count <= 0:
                raise ValueError(f"cannot read the duration of video {path}")
            self._durations[path] = count / fps
        return self._durations[path]

    def __call__(self, record: dict, n_frames: int) -> np.ndarray:
        refs = [r for group in frame_refs(record, self.cfg, self.seconds) for r in group][:n_frames]
        frames: list[np.ndarray] = []
        k = 0
        while k < len(refs):  # consecutive refs of one file are read in one pass
            j = k
            while j < len(refs) and refs[j][0] == refs[k][0]:
                j += 1
            frames.extend(self._read(refs[k][0], [t for _, t in refs[k:j]]))
            k = j
        if self.size is not None:
            frames = [letterbox(f, self.size) for f in frames]
        if not frames:
            return np.zeros((0, self.size or 0, self.size or 0, 3), np.uint8)
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise ValueError(f"frames of one record differ in size {sorted(shapes)}; pass size= to letterbox")
        return np.stack(frames)  # (F, H, W, 3)

    def _read(self, path: str, times: list[float]) -> list[np.ndarray]:
        import cv2

        full = self.resolve(path)
        if full.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
            img = cv2.imread(str(full), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"cannot decode image {path}")
            return [cv2.cvtColor(img, cv2.COLOR_BGR2RGB)] * len(times)
        cap = cv2.VideoCapture(str(full))
        try:
            fps = cap.get(cv2.CAP_PROP_FPS) or 1.0
            out: list[np.ndarray] = []
            pos, last = 0, None
            # Times only increase within a group, so grab forward instead of seeking per frame
            # (a seek decodes from the previous keyframe every time).
            for t in times:
                target = int(round(t * fps))
                while pos < target and cap.grab():
                    pos += 1
                ok, frame = cap.read()
                if ok:
                    pos += 1
                    last = frame
                elif last is None:
                    raise ValueError(f"cannot decode a frame of video {path} at {t:.2f} s")
                # past the real end (container counts are approximate): repeat the last frame
                out.append(cv2.cvtColor(last, cv2.COLOR_BGR2RGB))
            return out
        finally:
            cap.release()


def letterbox(frame: np.ndarray, size: int) -> np.ndarray:
    """Resize keeping aspect to fit size x size, zero-pad bottom/right. (H, W, 3) -> (size, size, 3)."""
    import cv2

    h, w = frame.shape[:2]
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    out = np.zeros((size, size, 3), np.uint8)
    out[:nh, :nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


# ---- tokens and labels ----------------------------------------------------------------------------


def preprocess(
    record: dict,
    *,
    tokenizer: Tokenizer,
    cfg: DataConfig = DataConfig(),
    rng: np.random.Generator | None = None,
    video_seconds: Callable[[str], float] | None = None,
) -> Sample:
    """One record -> Sample (frames not loaded). `rng` None means no jitter (evaluation)."""
    refs = frame_refs(record, cfg, video_seconds)
    ids, labeled = _template(record, tokenizer, [len(g) for g in refs])
    image = ids == tokenizer.image_id
    silence = ids == tokenizer.silence_id
    if rng is not None and cfg.jitter_p > 0:
        _jitter(ids, labeled, image, silence, cfg.jitter_p, rng)

    ids, labeled, image, silence = (a[: cfg.cutoff_len] for a in (ids, labeled, image, silence))
    positions = np.flatnonzero(image)
    flat_refs = [r for g in refs for r in g][: len(positions)]  # frames past the cutoff are dropped

    labels = np.where(labeled, ids, IGNORE)
    weights = labeled.astype(np.float32)
    weights[labeled & silence] = cfg.silence_weight
    return Sample(
        input_ids=torch.from_numpy(ids),
        labels=torch.from_numpy(labels),
        loss_weights=torch.from_numpy(weights),
        frame_refs=flat_refs,
        image_positions=torch.from_numpy(positions.astype(np.int64)),
    )


def _template(record: dict, tok: Tokenizer, frames_per_marker: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Llama-3 chat template. -> ids (T,) int64, labeled (T,) bool."""
    ids: list[int] = [tok.bos_id]
    lab: list[bool] = [False]
    # Never targets even inside assistant content: frames arrive, they are not predicted, and a
    # turn is closed by the runtime (barge-in), not by the model.
    unlabeled = {tok.image_id, tok.video_id, tok.eot_id, tok.bos_id, tok.start_header_id, tok.end_header_id}
    marker = 0
    for msg in record["messages"]:
        role, content = msg["role"], msg["content"]
        if role not in _ROLES:
            raise ValueError(f"unknown role {role!r} (expected one of {_ROLES})")
        head = tok.encode_parts(
            [(protocol.START_HEADER, True), (role, False), (protocol.END_HEADER + "\n\n", True)]
        )
        ids += head
        lab += [False] * len(head)
        for k, piece in enumerate(_MARKERS.split(content)):
            if k % 2:  # a frame marker: its frames, each one <|image|>
                n = frames_per_marker[marker]
                marker += 1
                ids += [tok.image_id] * n
                lab += [False] * n
            elif piece and role == "assistant":
                # Assistant turns are markup this project's data writes (<|silence|>, <|...|>).
                p = tok.encode_markup(piece)
                ids += p
                lab += [i not in unlabeled for i in p]
            elif piece:
                # System and user text is literal: a quoted "<|silence|>" in the prompt stays text.
                p = tok.encode(piece)
                ids += p
                lab += [False] * len(p)
        ids.append(tok.eot_id)
        lab.append(False)
    return np.asarray(ids, np.int64), np.asarray(lab, bool)


def _jitter(
    ids: np.ndarray,
    labeled: np.ndarray,
    image: np.ndarray,
    silence: np.ndarray,
    p: float,
    rng: np.random.Generator,
) -> None:
    """In place: with probability p each frame token swaps with the speech token just before it.

    Frames land by wall clock, so at run time a frame falls at any token of an answer; the data
    puts it after a whole word. Swapping teaches the model that a frame can arrive one token earlier.
    Only after speech (a labeled non-silence token): never after <|silence|> (the model waits for
    the frame there) nor after a header. Eligibility is read before any swap; two swaps never touch
    the same token because a frame's previous token is never another swapped frame.
    """
    pos = np.flatnonzero(image)  # (F,)
    u = rng.random(len(pos))  # one draw per frame, so the stream of draws does not depend on content
    prev = pos - 1
    ok = (pos > 0) & (u < p)
    ok[ok] = labeled[prev[ok]] & ~silence[prev[ok]] & ~image[prev[ok]]
    a, b = prev[ok], pos[ok]
    for arr in (ids, labeled, image, silence):
        arr[a], arr[b] = arr[b].copy(), arr[a].copy()


# ---- batches --------------------------------------------------------------------------------------


def collate(samples: Sequence[Sample], pad_id: int) -> Batch:
    """Right-pad to the LONGEST sample of this batch (never to a fixed length: a batch longer than
    the model's position table is a bug class of its own)."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    B = len(samples)
    T = max(len(s.input_ids) for s in samples)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    weights = torch.zeros((B, T), dtype=torch.float32)
    mask = torch.zeros((B, T), dtype=torch.bool)
    for b, s in enumerate(samples):
        n = len(s.input_ids)
        input_ids[b, :n] = s.input_ids
        labels[b, :n] = s.labels
        weights[b, :n] = s.loss_weights
        mask[b, :n] = True

    counts = torch.tensor([len(s.image_positions) for s in samples], dtype=torch.long)
    positions = torch.cat([s.image_positions for s in samples])  # (sum F,)
    frames = None
    if all(s.frames is not None for s in samples):
        parts = [torch.as_tensor(s.frames) for s in samples]
        for s, f in zip(samples, parts, strict=True):
            if f.shape[0] != len(s.image_positions):
                raise ValueError(
                    f"a sample has {f.shape[0]} frames for {len(s.image_positions)} <|image|> tokens"
                )
        filled = [f for f in parts if len(f)]  # a sample cut before its first frame has no frame size
        if len({tuple(f.shape[1:]) for f in filled}) > 1:
            raise ValueError("frames of the batch differ in size; letterbox them (VideoFrames(size=...))")
        frames = torch.cat(filled) if filled else parts[0]
    elif any(s.frames is not None for s in samples):
        raise ValueError("some samples of the batch have frames and some do not")
    return Batch(
        input_ids=input_ids,
        labels=labels,
        loss_weights=weights,
        attention_mask=mask,
        image_positions=positions,
        frame_counts=counts,
        frame_refs=[list(s.frame_refs) for s in samples],
        frames=frames,
    )


# ---- dataset --------------------------------------------------------------------------------------


def load_records(path: str | Path) -> list[dict]:
    """A JSON list of records, or JSONL (one record per line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"record file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class RecordDataset(torch.utils.data.Dataset):
    """Records of a file -> Samples with frames.

    `preprocess(record, rng=...)` makes the tokens (e.g. functools.partial(preprocess, tokenizer=tok,
    cfg=cfg, video_seconds=frames.seconds)); `frame_provider(record, n)` loads the kept frames;
    `frame_transform` (optional) turns the (F, H, W, 3) uint8 array into model input. Jitter draws
    come from a generator seeded by (seed, epoch, index): reproducible, and new each epoch.
    """

    def __init__(
        self,
        records: str | Path | list[dict],
        preprocess: Callable[..., Sample],
        frame_provider: FrameProvider | None = None,
        frame_transform: Callable[[np.ndarray], Any] | None = None,
        seed: int = 0,
    ):
        self.records = load_records(records) if isinstance(records, str | Path) else list(records)
        self.preprocess = preprocess
        self.frame_provider = frame_provider
        self.frame_transform = frame_transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        record = self.records[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        sample = self.preprocess(record, rng=rng)
        if self.frame_provider is None:
            return sample
        n = len(sample.frame_refs)
        frames = self.frame_provider(record, n)
        if len(frames) != n:
            raise ValueError(f"frame provider returned {len(frames)} frames for record {index}, expected {n}")
        if self.frame_transform is not None:
            frames = self.frame_transform(frames)
        return replace(sample, frames=frames)

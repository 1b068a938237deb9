"""Model configuration: one frozen dataclass read from (and written to) an HF `config.json`.

Owns the sizes of the network and the switches between the two modes:
- stock Mllama: no pooling, padding vision tokens masked, no RoPE in cross-attention;
- MOSS video: one tile per frame, average pooling (stride 4 -> 101 tokens per frame), full-attention
  vision, cross-attention RoPE at the frame's `<|image|>` text position.
The MOSS options are stored in config.json under "moss_video", so a saved model reloads in its mode.
It knows nothing of weights or tensors.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config.json a user gave us cannot describe this architecture (message is one sentence)."""


@dataclass(frozen=True)
class VisionConfig:
    hidden_size: int = 1280  # ViT width
    num_layers: int = 32  # local layers
    num_global_layers: int = 8  # gated global layers
    num_heads: int = 16
    intermediate_size: int = 5120
    image_size: int = 560  # one square tile
    patch_size: int = 14
    num_channels: int = 3
    norm_eps: float = 1e-5
    max_num_tiles: int = 4  # sizes the tile embedding tables; we always use tile 0
    max_aspect_ratio_id: int = 8  # len(supported_aspect_ratios)
    intermediate_layers: tuple[int, ...] = (3, 7, 15, 23, 30)  # taps concatenated with the final state
    vision_output_dim: int = 7680  # hidden_size * (1 + len(intermediate_layers))

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:  # with CLS
        return self.grid**2 + 1


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 128256  # lm_head rows; the embedding has 8 more (the <|image|> token lives there)
    hidden_size: int = 4096
    num_layers: int = 40
    num_heads: int = 32
    num_kv_heads: int = 8
    intermediate_size: int = 14336
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: tuple[tuple[str, Any], ...] | None = (
        ("rope_type", "llama3"),
        ("factor", 8.0),
        ("low_freq_factor", 1.0),
        ("high_freq_factor", 4.0),
        ("original_max_position_embeddings", 8192),
    )
    cross_attention_layers: tuple[int, ...] = (3, 8, 13, 18, 23, 28, 33, 38)
    max_position_embeddings: int = 131072
    extra_embeddings: int = 8  # Mllama embeds vocab_size + 8 rows

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def rope_scaling_dict(self) -> dict[str, Any] | None:
        return dict(self.rope_scaling) if self.rope_scaling else None


@dataclass(frozen=True)
class VideoConfig:
    """How frames become cross-attention memory (the MOSS options)."""

    mode: str = "moss"  # "moss" or "stock"
    pool_stride: int = 4  # 2D average pooling of the patch grid (1 = none); CLS is kept
    vision_full_attention: bool = True  # MOSS attends the padding slots; stock masks pad-to-pad
    xattn_rope: bool = True  # RoPE in cross-attention at the frame's <|image|> text position
    # Which hidden state is tapped for layer i of `intermediate_layers`: the INPUT of layer i or its
    # OUTPUT; input_of(i) == output_of(i - 1). MOSS: the input (its modeling code collects the hidden
    # states before each layer, as transformers <= 4.5x and Meta's reference do). Stock: the output,
    # what the pinned transformers (5.17) runs for Llama-3.2-Vision (its authors' code path today).
    feature_taps: str = "layer_input"
    # Tokens before the first frame: "none" sees no frame; "all" attends to every frame, as stock
    # Mllama in transformers does (its cross-attention mask leaves such rows unmasked and only their
    # MLP is zeroed). MOSS: "none", what its real-time path does (the stream's prefix is run before
    # any frame exists). Only matters for an offline pass with text before the first frame.
    empty_rows: str = "none"
    # Stock Mllama runs a one-tile frame as max_num_tiles tiles (the frame, then empty tiles that its
    # tokens attend to; transformers and Meta's reference alike). True = the same (exact; the tower
    # does max_num_tiles x the work); False = the frame's tile alone (faster, not the reference).
    # Only for a masked (stock) tower; MOSS runs one tile per frame with full attention.
    pad_tiles: bool = False
    # How a frame becomes a tile: "reference" = the Mllama image processor's (sizes floored, at least
    # the tile on the long side, PIL bilinear); "fast" = OpenCV INTER_AREA with rounded sizes (what
    # the bundled model was trained on).
    resize: str = "reference"
    image_token_id: int = 128256

    def __post_init__(self):
        if self.mode not in ("moss", "stock"):
            raise ConfigError(f"moss_video.mode must be 'moss' or 'stock', not {self.mode!r}.")
        if self.feature_taps not in ("layer_input", "layer_output"):
            raise ConfigError("moss_video.feature_taps must be 'layer_input' or 'layer_output'.")
        if self.empty_rows not in ("none", "all"):
            raise ConfigError("moss_video.empty_rows must be 'none' or 'all'.")
        if self.resize not in ("reference", "fast"):
            raise ConfigError("moss_video.resize must be 'reference' or 'fast'.")
        if self.pool_stride < 1:
            raise ConfigError("moss_video.pool_stride must be at least 1.")


STOCK = VideoConfig(
    mode="stock",
    pool_stride=1,
    vision_full_attention=False,
    xattn_rope=False,
    feature_taps="layer_output",
    empty_rows="all",
    pad_tiles=True,
)
MOSS = VideoConfig()


@dataclass(frozen=True)
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    video: VideoConfig = field(default_factory=VideoConfig)

    @property
    def tokens_per_frame(self) -> int:
        g = self.vision.grid
        if self.video.pool_stride == 1:
            return g * g + 1
        return (g // self.video.pool_stride) ** 2 + 1

    # ---- HF config.json <-> ModelConfig ---------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], mode: str | None = None) -> ModelConfig:
        if not isinstance(d, dict):
            raise ConfigError("config.json must hold a JSON object.")
        mt = d.get("model_type")
        if mt != "mllama":
            raise ConfigError(
                f"config.json says model_type {mt!r}; this app runs 'mllama' (Llama-3.2-Vision / "
                "MOSS-Video-Preview) checkpoints."
            )
        v = d.get("vision_config") or {}
        t = d.get("text_config") or {}
        if not isinstance(v, dict) or not isinstance(t, dict):
            raise ConfigError("config.json: vision_config and text_config must be JSON objects.")
        try:
            vision = _vision_from_hf(v)
            text = _text_from_hf(t)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config.json has a malformed field: {e}") from None
        video = _video_from_hf(d, mode, d.get("image_token_index", 128256))
        cfg = cls(vision=vision, text=text, video=video)
        cfg.validate()
        return cfg

    def to_hf_dict(self) -> dict[str, Any]:
        v, t = self.vision, self.text
        rope = {"rope_type": "default", "rope_theta": t.rope_theta}
        if t.rope_scaling:
            rope = {**t.rope_scaling_dict, "rope_theta": t.rope_theta}
        return {
            "model_type": "mllama",
            "architectures": ["MllamaForConditionalGeneration"],
            "image_token_index": self.video.image_token_id,
            "vision_config": {
                "model_type": "mllama_vision_model",
                "hidden_size": v.hidden_size,
                "num_hidden_layers": v.num_layers,
                "num_global_layers": v.num_global_layers,
                "attention_heads": v.num_heads,
                "intermediate_size": v.intermediate_size,
                "image_size": v.image_size,
                "patch_size": v.patch_size,
                "num_channels": v.num_channels,
                "norm_eps": v.norm_eps,
                "max_num_tiles": v.max_num_tiles,
                "supported_aspect_ratios": _aspect_ratios(v.max_num_tiles, v.max_aspect_ratio_id),
                "intermediate_layers_indices": list(v.intermediate_layers),
                "vision_output_dim": v.vision_output_dim,
            },
            "text_config": {
                "model_type": "mllama_text_model",
                "vocab_size": t.vocab_size,
                "hidden_size": t.hidden_size,
                "num_hidden_layers": t.num_layers,
                "num_attention_heads": t.num_heads,
                "num_key_value_heads": t.num_kv_heads,
                "intermediate_size": t.intermediate_size,
                "rms_norm_eps": t.rms_norm_eps,
                "rope_parameters": rope,
                "cross_attention_layers": list(t.cross_attention_layers),
                "max_position_embeddings": t.max_position_embeddings,
            },
            "moss_video": dataclasses.asdict(self.video),
        }

    @classmethod
    def from_file(cls, path: str | Path, mode: str | None = None) -> ModelConfig:
        from engine.files import FileProblem, read_bounded

        path = Path(path)
        if not path.exists():
            raise ConfigError(f"No config.json in {path.parent}.")
        try:
            d = json.loads(read_bounded(path, 4 * 2**20, "config.json").decode("utf-8"))
        except FileProblem as e:
            raise ConfigError(str(e)) from None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise ConfigError(f"{path} is not valid JSON ({e}).") from None
        return cls.from_hf_dict(d, mode=mode)

    def validate(self) -> None:
        v, t = self.vision, self.text
        sizes = {
            "vision hidden_size": v.hidden_size,
            "vision num_hidden_layers": v.num_layers,
            "vision attention_heads": v.num_heads,
            "vision intermediate_size": v.intermediate_size,
            "vision image_size": v.image_size,
            "vision patch_size": v.patch_size,
            "vision max_num_tiles": v.max_num_tiles,
            "text vocab_size": t.vocab_size,
            "text hidden_size": t.hidden_size,
            "text num_hidden_layers": t.num_layers,
            "text num_attention_heads": t.num_heads,
            "text num_key_value_heads": t.num_kv_heads,
            "text intermediate_size": t.intermediate_size,
        }
        for name, n in sizes.items():
            if n < 1:
                raise ConfigError(f"config.json: {name} is {n}; it must be at least 1.")
        if v.num_global_layers < 0:
            raise ConfigError("config.json: vision num_global_layers must not be negative.")
        if v.hidden_size % v.num_heads:
            raise ConfigError("vision hidden_size must divide by its attention heads.")
        if not (t.rope_theta > 0 and t.rms_norm_eps > 0 and v.norm_eps > 0):
            raise ConfigError("config.json: rope_theta and the norm epsilons must be positive numbers.")
        if v.image_size % v.patch_size:
            raise ConfigError("vision image_size must be a multiple of patch_size.")
        if self.video.pool_stride > 1 and v.grid % self.video.pool_stride:
            raise ConfigError(f"the {v.grid}x{v.grid} patch grid does not divide by pool stride.")
        if v.vision_output_dim != v.hidden_size * (1 + len(v.intermediate_layers)):
            raise ConfigError(
                "vision_output_dim must equal hidden_size x (1 + number of intermediate layers)."
            )
        if any(not 0 <= i < v.num_layers for i in v.intermediate_layers):
            raise ConfigError("an intermediate layer index is outside the vision encoder.")
        if t.hidden_size % t.num_heads or t.num_heads % t.num_kv_heads:
            raise ConfigError("text hidden_size must divide by heads, and heads by KV heads.")
        if any(not 0 <= i < t.num_layers for i in t.cross_attention_layers):
            raise ConfigError("a cross-attention layer index is outside the text decoder.")
        if not 0 <= self.video.image_token_id < t.vocab_size + t.extra_embeddings:
            raise ConfigError("image_token_index must be inside the embedding table.")


def _aspect_ratios(max_tiles: int, n: int) -> list[list[int]]:
    out = [[w, h] for w in range(1, max_tiles + 1) for h in range(1, max_tiles + 1) if w * h <= max_tiles]
    out.sort(key=lambda r: (r[0], r[1]))
    # transformers' default order for 4 tiles
    if max_tiles == 4 and n == 8:
        return [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]]
    return out[:n] if len(out) >= n else out + [[1, 1]] * (n - len(out))


def _vision_from_hf(v: dict[str, Any]) -> VisionConfig:
    base = VisionConfig()
    hidden = int(v.get("hidden_size", base.hidden_size))
    inter = tuple(int(i) for i in v.get("intermediate_layers_indices", base.intermediate_layers))
    ratios = v.get("supported_aspect_ratios")
    max_tiles = int(v.get("max_num_tiles", base.max_num_tiles))
    n_ratios = len(ratios) if ratios else (8 if max_tiles == 4 else len(_aspect_ratios(max_tiles, 99)))
    image_size = v.get("image_size", base.image_size)
    patch = v.get("patch_size", base.patch_size)
    image_size = image_size[0] if isinstance(image_size, list | tuple) else image_size
    patch = patch[0] if isinstance(patch, list | tuple) else patch
    return VisionConfig(
        hidden_size=hidden,
        num_layers=int(v.get("num_hidden_layers", base.num_layers)),
        num_global_layers=int(v.get("num_global_layers", base.num_global_layers)),
        num_heads=int(v.get("attention_heads", v.get("num_attention_heads", base.num_heads))),
        intermediate_size=int(v.get("intermediate_size", base.intermediate_size)),
        image_size=int(image_size),
        patch_size=int(patch),
        num_channels=int(v.get("num_channels", 3)),
        norm_eps=float(v.get("norm_eps", base.norm_eps)),
        max_num_tiles=max_tiles,
        max_aspect_ratio_id=n_ratios,
        intermediate_layers=inter,
        vision_output_dim=int(v.get("vision_output_dim", hidden * (1 + len(inter)))),
    )


def _text_from_hf(t: dict[str, Any]) -> TextConfig:
    base = TextConfig()
    # transformers <= 4.x writes rope_theta + rope_scaling; 5.x writes rope_parameters.
    rp = t.get("rope_parameters") or {}
    rs = t.get("rope_scaling") or {}
    theta = float(rp.get("rope_theta", t.get("rope_theta", base.rope_theta)))
    scaling = dict(rp or rs)
    scaling.pop("rope_theta", None)
    rtype = scaling.get("rope_type", scaling.get("type", "default"))
    if rtype not in ("default", "llama3"):
        raise ValueError(f"rope type {rtype!r} is not supported (default or llama3)")
    scaling_t = None
    if rtype == "llama3":
        scaling_t = (
            ("rope_type", "llama3"),
            ("factor", float(scaling["factor"])),
            ("low_freq_factor", float(scaling["low_freq_factor"])),
            ("high_freq_factor", float(scaling["high_freq_factor"])),
            ("original_max_position_embeddings", int(scaling["original_max_position_embeddings"])),
        )
    hidden = int(t.get("hidden_size", base.hidden_size))
    heads = int(t.get("num_attention_heads", base.num_heads))
    head_dim = t.get("head_dim")
    if head_dim is not None and int(head_dim) != hidden // heads:
        raise ValueError("head_dim must equal hidden_size / num_attention_heads")
    return TextConfig(
        vocab_size=int(t.get("vocab_size", base.vocab_size)),
        hidden_size=hidden,
        num_layers=int(t.get("num_hidden_layers", base.num_layers)),
        num_heads=heads,
        num_kv_heads=int(t.get("num_key_value_heads", base.num_kv_heads)),
        intermediate_size=int(t.get("intermediate_size", base.intermediate_size)),
        rms_norm_eps=float(t.get("rms_norm_eps", base.rms_norm_eps)),
        rope_theta=theta,
        rope_scaling=scaling_t,
        cross_attention_layers=tuple(
            int(i) for i in t.get("cross_attention_layers", base.cross_attention_layers)
        ),
        max_position_embeddings=int(t.get("max_position_embeddings", base.max_position_embeddings)),
    )


MODES = ("moss", "stock")


def detect_mode(d: dict[str, Any]) -> tuple[str, str]:
    """(mode, why) from what a config.json really says. The published MOSS-Video-Preview checkpoints
    name the architecture VideoMllamaForConditionalGeneration and map auto classes to their remote
    code (configuration_video_mllama / modeling_video_mllama), with model_type "mllama"; our own
    saves carry a moss_video section; stock Llama-3.2-Vision says MllamaForConditionalGeneration."""
    stored = d.get("moss_video")
    if isinstance(stored, dict):
        return str(stored.get("mode", "moss")), "its moss_video section"
    archs = [str(a) for a in (d.get("architectures") or []) if isinstance(a, str)]
    for a in archs:
        if "video" in a.lower() or "moss" in a.lower():
            return "moss", f"architecture {a}"
    auto_map = d.get("auto_map")
    if isinstance(auto_map, dict):
        for target in auto_map.values():
            t = " ".join(target) if isinstance(target, list) else str(target)
            if "video_mllama" in t.lower() or "moss" in t.lower():
                return "moss", f"auto_map to {t}"
    name = str(d.get("_name_or_path", ""))
    if "moss" in name.lower():
        return "moss", f"name {name}"
    return "stock", f"architecture {archs[0]}" if archs else "no MOSS marker"


def _video_from_hf(d: dict[str, Any], mode: str | None, image_token_id: int) -> VideoConfig:
    stored = d.get("moss_video")
    if stored is not None and not isinstance(stored, dict):
        raise ConfigError("config.json: moss_video must be a JSON object.")
    if mode is not None and mode not in MODES:
        raise ConfigError(f"mode must be 'moss' or 'stock', not {mode!r}.")
    if mode is None:
        mode, _why = detect_mode(d)
    base = MOSS if mode == "moss" else STOCK
    fields = {f.name for f in dataclasses.fields(VideoConfig)}
    kw = dataclasses.asdict(base)
    if stored is not None and stored.get("mode", mode) == mode:
        kw.update({k: v for k, v in stored.items() if k in fields})
    kw["mode"] = mode
    kw["image_token_id"] = int(image_token_id)
    try:
        return VideoConfig(**kw)
    except TypeError as e:
        raise ConfigError(f"config.json: moss_video is malformed ({e}).") from None


# ---- named presets --------------------------------------------------------------------------------
def tiny(mode: str = "moss", image_token_id: int | None = None, **text_overrides) -> ModelConfig:
    """A tiny random config for tests (runs in milliseconds on a CPU)."""
    vision = VisionConfig(
        hidden_size=32,
        num_layers=4,
        num_global_layers=2,
        num_heads=2,
        intermediate_size=64,
        image_size=56 if mode == "moss" else 28,
        patch_size=7 if mode == "moss" else 14,
        max_num_tiles=1,
        max_aspect_ratio_id=1,
        intermediate_layers=(1, 3),
        vision_output_dim=96,
    )
    tkw = dict(
        vocab_size=320,
        hidden_size=64,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=128,
        rope_theta=10000.0,
        rope_scaling=None,
        cross_attention_layers=(1, 3),
        max_position_embeddings=4096,
    )
    tkw.update(text_overrides)
    text = TextConfig(**tkw)
    img = text.vocab_size if image_token_id is None else image_token_id
    video = dataclasses.replace(MOSS if mode == "moss" else STOCK, image_token_id=img, resize="fast")
    return ModelConfig(vision=vision, text=text, video=video)


def moss_11b() -> ModelConfig:
    """MOSS-Video-Preview 11B (Llama-3.2-11B-Vision sizes, MOSS video mode)."""
    return ModelConfig(vision=VisionConfig(), text=TextConfig(), video=MOSS)


def llama_11b_stock() -> ModelConfig:
    return ModelConfig(vision=VisionConfig(), text=TextConfig(), video=STOCK)

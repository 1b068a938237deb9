"""Checkpoints: load and save HF-style model folders (config.json + safetensors + tokenizer.json).

Owns: finding the weight files (single or sharded), refusing pickled weights, the two key spellings
of Mllama checkpoints (transformers <= 4.51 and >= 4.52), shape checks with messages a user can act
on, hub downloads (only from the id the user gave, never trust_remote_code), and saving (sharded to
a size limit so the shipped model fits in the repository). It knows nothing of generation or threads.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from engine.checkpoint import Checkpoint, Origin
from engine.config import ConfigError, ModelConfig
from engine.decoder import rope_inv_freq
from engine.decoding import DecodingError, read_generation_config
from engine.files import MB, FileProblem, check_bounded, read_bounded
from engine.model import Model
from engine.novelty import FILE as NOVELTY_FILE
from engine.novelty import WorldCheck
from engine.perception import forget_compiled_encoder

PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class LoadError(RuntimeError):
    """A checkpoint cannot be loaded; the message is one sentence a user can act on."""


# old spelling (transformers <= 4.51) and new (>= 4.52) -> ours
_PREFIXES = [
    ("model.vision_model.", "vision_model."),
    ("model.language_model.", "language_model."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("language_model.model.", "language_model."),
    ("language_model.lm_head.", "lm_head."),
]


def canonical_key(key: str) -> str:
    for old, new in _PREFIXES:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def saved_key(key: str) -> str:
    """Our name -> the transformers >= 4.52 spelling (what we write)."""
    return key if key.startswith("lm_head.") else "model." + key


# The published MOSS-Video-Preview checkpoints go by two organisation names: the one their model cards
# and scripts use (fnlp-vision) and the team's (OpenMOSS-Team). Either spelling finds the same weights.
_MOSS = ("moss-video-preview-base", "moss-video-preview-sft", "moss-video-preview-realtime-sft")
HUB_ALIASES: dict[str, tuple[str, ...]] = {}
for _name in _MOSS:
    _ids = (f"fnlp-vision/{_name}", f"OpenMOSS-Team/{_name}")
    for _i in _ids:
        HUB_ALIASES[_i.lower()] = _ids


def hub_candidates(repo_id: str) -> list[str]:
    """The id as given, then the other spellings of the same checkpoint."""
    return [repo_id] + [a for a in HUB_ALIASES.get(repo_id.lower(), ()) if a.lower() != repo_id.lower()]


def resolve(path: str | os.PathLike, local_only: bool = False, progress: Callable | None = None) -> Path:
    """A local folder, or a hub id (or its alias) from the hub cache or downloaded. Raises LoadError."""
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise LoadError(f"{p} is a file; point at the model folder that holds config.json.")
        return p
    s = str(path)
    if not HUB_ID.match(s):
        raise LoadError(f"Model folder {s} does not exist.")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise LoadError("Downloading from the hub needs the huggingface_hub package.") from None
    # Only what we load: config, safetensors and tokenizer files. No code, no pickles.
    kw = dict(allow_patterns=["*.json", "*.safetensors", "tokenizer*"], tqdm_class=progress)
    for repo in hub_candidates(s):  # already downloaded under either spelling: no network needed
        try:
            return Path(snapshot_download(repo_id=repo, local_files_only=True, **kw))
        except Exception:
            continue
    if local_only:
        raise LoadError(
            f"{s} is not a local folder or in the hub cache, and network use is off (local only)."
        )
    last = None
    for repo in hub_candidates(s):
        try:
            return Path(snapshot_download(repo_id=repo, **kw))
        except Exception as e:  # network errors come in many types
            last = e
            if type(e).__name__ not in ("RepositoryNotFoundError", "GatedRepoError"):
                break  # the network, not the name: an alias would fail the same way
    raise LoadError(
        f"Could not download {s} from the hub ({type(last).__name__}); check the id and network."
    ) from None


def check_device(device: str | torch.device) -> torch.device:
    """The device a user named, if this machine has it; LoadError (one sentence) otherwise. Checked
    before any weight is read, so a missing GPU is never blamed on the checkpoint."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise LoadError(f"Unknown device {str(device)!r}; use cpu, cuda, cuda:N or mps.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = (
                "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            )
            raise LoadError(
                f"This machine has no CUDA GPU that PyTorch can use (torch {torch.__version__} is {build}); "
                "use the CPU (--device cpu)."
            )
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise LoadError(f"There is no GPU {dev}: this machine has {n} (cuda:0 to cuda:{n - 1}).")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise LoadError("This machine has no Apple GPU (mps) that PyTorch can use; use the CPU.")
    elif dev.type != "cpu":
        raise LoadError(f"Device {str(device)!r} is not supported; use cpu, cuda, cuda:N or mps.")
    return dev


def weight_files(folder: Path) -> list[Path]:
    idx = folder / "model.safetensors.index.json"
    if idx.exists():
        try:
            wm = json.loads(read_bounded(idx, 64 * MB, "weight index"))["weight_map"]
            files = sorted({folder / f for f in wm.values()})
        except FileProblem as e:
            raise LoadError(str(e)) from None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
            raise LoadError(f"{idx.name} in {folder} is malformed (no weight_map).") from None
        if any(f.parent != folder for f in files):
            raise LoadError(f"{idx.name} in {folder} names a shard outside the folder.")
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise LoadError(f"{folder} is missing shard {missing[0]} named in {idx.name}.")
        return files
    single = folder / "model.safetensors"
    if single.exists():
        return [single]
    st = sorted(folder.glob("*.safetensors"))
    if st:
        return st
    pickled = sorted(f.name for f in folder.iterdir() if f.suffix in PICKLED)
    if pickled:
        raise LoadError(
            f"{folder} holds only pickled weights ({pickled[0]}); they can run code when opened, so they are "
            "refused. Convert them to safetensors."
        )
    raise LoadError(f"{folder} has no model.safetensors weights.")


def read_state(files: list[Path], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if f.suffix in PICKLED:
            raise LoadError(
                f"{f.name} is a pickled weight file; it is refused (it could run code). Use safetensors."
            )
        if f.stat().st_size < 8:
            raise LoadError(f"{f.name} is empty or truncated.")
        try:
            with safe_open(str(f), framework="pt", device=str(device)) as sf:
                for k in sf.keys():
                    state[canonical_key(k)] = sf.get_tensor(k)
        except LoadError:
            raise
        except Exception as e:
            raise LoadError(
                f"{f.name} is not a readable safetensors file (truncated or corrupt: {e})."
            ) from None
    return state


def load_model(path: str | os.PathLike, **kw) -> Model:
    """The network of a checkpoint only (`load_checkpoint(...).model`): training and tests."""
    return load_checkpoint(path, **kw).model


def load_checkpoint(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    mode: str | None = None,
    local_only: bool = False,
    progress: Callable | None = None,
    video: dict | None = None,
    quantize: str | None = None,
) -> Checkpoint:
    """Load a checkpoint folder or hub id -> Checkpoint: the Model in eval mode, its tokenizer (or
    None), generation settings and origin (engine.checkpoint).

    dtype: None keeps float32 on CPU and bfloat16 on CUDA. mode: force "moss" or "stock" (None: what
    config.json says, `engine.config.detect_mode`). generation_config.json, when present, becomes
    `.generation_config` (the decoding its authors use, `engine.decoding.checkpoint_defaults`).
    video: overrides of VideoConfig fields (e.g. {"feature_taps": "layer_output"}).
    quantize: "int8" = int8 weight-only text decoder (`quantize_int8`: about half the bf16 weight memory;
    the weights are read on the CPU and quantized module by module on their way to `device`);
    "fp8-vision" = an FP8 copy of the vision tower for batched perception (`quantize_fp8_vision`);
    both: "int8+fp8-vision".
    """
    quant = parse_quantize(quantize)
    device = check_device(device)
    folder = resolve(path, local_only=local_only, progress=progress)
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        raise LoadError(f"{folder} has no config.json; it is not a model folder.")
    try:
        cfg = ModelConfig.from_file(cfg_path, mode=mode)
        if video:
            cfg = dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, **video))
    except (ConfigError, TypeError) as e:
        raise LoadError(str(e)) from None
    device = torch.device(device)
    if isinstance(dtype, str):
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        on_cpu_first = device.type != "cuda" or "int8" in quant
        state = read_state(weight_files(folder), device="cpu" if on_cpu_first else device)
        with torch.device("meta"):
            model = Model(cfg)
        ignored = check_state(model, state)
        for k, v in state.items():
            if not v.is_floating_point():
                raise LoadError(
                    f"Weight {k} is stored as {str(v.dtype).replace('torch.', '')}; this app loads float weights "
                    "(float32, bfloat16, float16). Quantized checkpoints are not supported."
                )
        state = {k: v.to(dtype) for k, v in state.items()}
        model.load_state_dict(state, strict=False, assign=True)
        model.inv_freq = rope_inv_freq(cfg.text)  # non-persistent buffer: still on meta
        del state
        if "int8" in quant:
            quantize_int8(model, device)
        model.to(device)
        if "fp8-vision" in quant:
            quantize_fp8_vision(model)
    except torch.OutOfMemoryError:
        raise LoadError(
            f"Out of memory while loading {path} on {device}: use a smaller dtype (bfloat16) or the CPU."
        ) from None
    model.eval()
    tokenizer = _load_tokenizer(folder, cfg)
    generation = _load_generation(folder)
    try:
        generation_config = read_generation_config(folder)
    except DecodingError as e:
        raise LoadError(str(e)) from None
    try:
        if (folder / NOVELTY_FILE).exists():  # a folder or device of that name is refused, not skipped
            check_bounded(folder / NOVELTY_FILE, 64 * MB, NOVELTY_FILE)  # ours is 2 MB
        world_check = WorldCheck.load(folder)
    except FileProblem as e:
        raise LoadError(str(e)) from None
    except Exception as e:  # a damaged file of ours: say which
        raise LoadError(f"{folder / NOVELTY_FILE} is not a readable world check ({e}).") from None
    return Checkpoint(
        model,
        tokenizer,
        Origin.of(str(path), folder),
        generation=generation,
        generation_config=generation_config,
        quantized="+".join(q for q in QUANTIZATIONS if q in quant) or None,
        ignored_keys=tuple(ignored),
        world_check=world_check,
    )


QUANTIZATIONS = ("int8", "fp8-vision")


def parse_quantize(quantize: str | None) -> frozenset[str]:
    """ "int8", "fp8-vision", "int8+fp8-vision" or None -> the set of names (LoadError on others)."""
    names = frozenset(quantize.split("+")) if quantize else frozenset()
    unknown = sorted(names - set(QUANTIZATIONS))
    if unknown:
        raise LoadError(
            f"Unknown quantization {unknown[0]!r}; the choices are {', '.join(QUANTIZATIONS)} (join two with +)."
        )
    return names


def quantize_fp8_vision(model: Model) -> None:
    """An FP8 copy of the vision tower and projector for batched perception (`perceive`, the offline
    hand-over of many frames): FP8 (e4m3) weights with per-row scales and dynamically scaled per-row
    FP8 activations through torchao (torch._scaled_mm). A batch of frames through ViT-H is
    matmul-bound, and FP8 runs those matmuls at about twice the bf16 rate on Hopper. Live frames keep
    the bf16 tower: one frame at a time, the activation scaling kernels cost more than FP8 saves
    (measured on an H100: 18.9 vs 8.0 ms per frame). The copy adds about half the tower's bf16 size.
    Patch embedding, norms, attention and the text decoder are not quantized. Needs the model on an
    NVIDIA GPU of compute capability 8.9 or newer (Ada, Hopper, Blackwell)."""
    dev = model.multi_modal_projector.weight.device
    if dev.type != "cuda" or torch.cuda.get_device_capability(dev) < (8, 9):
        raise LoadError(
            "FP8 vision needs the model on an NVIDIA GPU of compute capability 8.9 or newer (Ada, Hopper); "
            f"this one is on {dev}."
        )
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_
    except ImportError as e:
        raise LoadError(
            f"FP8 vision needs torchao: pip install 'moss-live[gpu]' (or torchao==0.18.0) ({e})."
        ) from None

    # activation_value_lb: an all-zero row (the tower's padding tokens) would get a zero scale, and 0/0
    # poisons every token through attention. set_inductor_config=False: torchao would otherwise switch
    # on inductor's coordinate-descent tuning for the whole process (every later compile takes minutes).
    fp8 = Float8DynamicActivationFloat8WeightConfig(
        granularity=PerRow(), activation_value_lb=1e-12, set_inductor_config=False
    )
    parts = copy.deepcopy(torch.nn.ModuleList([model.vision_model, model.multi_modal_projector])).eval()
    quantize_(parts, fp8, filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear))
    model.fp8_vision = (parts[0], parts[1])
    forget_compiled_encoder(model)  # a compiled tower without the FP8 copy


def quantize_int8(model: Model, device) -> None:
    """int8 weight-only (`engine.quant`: int8 rows, one scale per output row) for every projection of
    the text decoder and lm_head; each moves to `device` as it is quantized (peak memory: one module in
    the model's dtype at a time). The vision tower, norms and embeddings keep their dtype. On CUDA the
    decode step's products run through the fused int8 kernel (`engine.quant.int8_gemv`)."""
    from engine.decoder import Linear
    from engine.quant import quantize_rows

    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, Linear) and mod.weight is not None:
                q, scale = quantize_rows(mod.weight.to(device))
                mod.weight = None
                mod.qweight, mod.qscale, mod.int8 = q, scale, True


def check_state(model: Model, state: dict[str, torch.Tensor]) -> list[str]:
    """LoadError unless `state` holds every weight of `model` in its shape; removes (and returns) the
    names of weights the model does not use."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise LoadError(f"The checkpoint lacks weight {missing[0]}{more}; it does not match config.json.")
    for k, shape in expected.items():
        got = tuple(state[k].shape)
        if got != shape:
            raise LoadError(f"Weight {k} has shape {list(got)} but config.json needs {list(shape)}.")
    extra = [k for k in state if k not in expected]
    for k in extra:  # tolerated (e.g. rotary buffers of older exports), but removed
        del state[k]
    return extra


def _load_generation(folder: Path) -> dict:
    """generation.json: settings the model was trained with (our small model's short system prompt)."""
    f = folder / "generation.json"
    if not f.exists():
        return {}
    try:
        d = json.loads(read_bounded(f, MB, "generation.json").decode("utf-8"))
    except FileProblem as e:
        raise LoadError(str(e)) from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise LoadError(f"{f} is not valid JSON ({e}).") from None
    if not isinstance(d, dict) or not isinstance(d.get("system_prompt", ""), str):
        raise LoadError(f"{f} must be a JSON object whose system_prompt is text.")
    return d


def _load_tokenizer(folder: Path, cfg: ModelConfig):
    """tokenizer.json, checked against config.json: one sentence naming the file when it is not a
    tokenizer, or belongs to another model (its ids do not fit this model's embedding table)."""
    path = folder / "tokenizer.json"
    if not path.exists():
        return None
    from engine.tokenizer import Tokenizer

    try:
        check_bounded(path, 256 * MB, "tokenizer.json")  # Llama-3's is 9 MB; the library reads it
        with open(path, "rb") as f:
            head = f.read(64).lstrip()
        if not head.startswith(b"{"):
            raise LoadError(f"{path} is not a tokenizer.json (it is not a JSON object).")
        tok = Tokenizer.from_folder(folder)
    except FileProblem as e:
        raise LoadError(str(e)) from None
    except (ValueError, OSError, KeyError, TypeError) as e:
        first = str(e).split("\n")[0][:200]
        raise LoadError(f"{path} is not a usable tokenizer.json ({first}).") from None
    rows = cfg.text.vocab_size + cfg.text.extra_embeddings
    if tok.image_id != cfg.video.image_token_id or tok.vocab_size > rows:
        raise LoadError(
            f"{path} belongs to another model: its <|image|> id is {tok.image_id} and it has {tok.vocab_size} "
            f"ids, but config.json has image_token_index {cfg.video.image_token_id} and {rows} embedding rows."
        )
    return tok


def save_checkpoint(ckpt: Checkpoint, folder: str | os.PathLike, max_shard_mb: float = 15.0) -> Path:
    """Write a Checkpoint as a folder that load_checkpoint reads back."""
    out = save_model(
        ckpt.model, folder, ckpt.tokenizer, max_shard_mb, ckpt.generation, ckpt.generation_config
    )
    if ckpt.world_check is not None:
        ckpt.world_check.save(out)
    return out


def save_model(
    model: Model,
    folder: str | os.PathLike,
    tokenizer=None,
    max_shard_mb: float = 15.0,
    generation: dict | None = None,
    generation_config: dict | None = None,
) -> Path:
    """Write config.json, safetensors (sharded above max_shard_mb), tokenizer.json and, when given,
    generation.json and generation_config.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(model.cfg.to_hf_dict(), indent=2) + "\n")
    state = {saved_key(k): v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    limit = int(max_shard_mb * 2**20)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k in sorted(state):
        n = state[k].numel() * state[k].element_size()
        if shards[-1] and size + n > limit:
            shards.append({})
            size = 0
        shards[-1][k] = state[k]
        size += n
    for old in list(folder.glob("model*.safetensors")) + [folder / "model.safetensors.index.json"]:
        old.unlink(missing_ok=True)
    if len(shards) == 1:
        save_file(shards[0], str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        wm = {}
        for i, sh in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(sh, str(folder / name), metadata={"format": "pt"})
            wm.update({k: name for k in sh})
        total = sum(v.numel() * v.element_size() for v in state.values())
        idx = {"metadata": {"total_size": total}, "weight_map": wm}
        (folder / "model.safetensors.index.json").write_text(json.dumps(idx, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(folder / "tokenizer.json")
    if generation:
        (folder / "generation.json").write_text(json.dumps(generation, indent=2) + "\n")
    if generation_config:
        (folder / "generation_config.json").write_text(json.dumps(generation_config, indent=2) + "\n")
    return folder

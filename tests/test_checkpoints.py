"""Published checkpoints load the way their authors run them: mode, taps, decoding, preprocessing, ids.

Each checkpoint folder here is written in the layout of a published one (config.json keys as the hub
files spell them, transformers 4.45 style, generation_config.json as published) at a tiny size with
random weights, and loaded the way a user loads it: `load_model(folder)` with nothing forced.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine import decoding, load_model
from engine.config import detect_mode
from engine.loading import LoadError, hub_candidates, load_checkpoint, resolve
from engine.preprocess import CLIP_MEAN, CLIP_STD, batch_pixels
from tests.paths import MOSS_DEMO

transformers = pytest.importorskip("transformers")

IMAGE = 320  # the tiny vocabulary's <|image|> id (the real one is 128256)
ASPECT_RATIOS = [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]]
LLAMA_INSTRUCT_GENERATION = {  # meta-llama/Llama-3.2-11B-Vision-Instruct's generation_config.json
    "bos_token_id": 128000,
    "do_sample": True,
    "eos_token_id": [128001, 128008, 128009],
    "pad_token_id": 128004,
    "temperature": 0.6,
    "top_p": 0.9,
}
LLAMA_BASE_GENERATION = {  # a base checkpoint's file in the same layout"bos_token_id": 128000, "eos_token_id": 128001, "do_sample": True,
                         "temperature": 0.6, "top_p": 0.9}  # fmt: skip
MOSS_GENERATION = {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "temperature": 1.0,
                   "top_k": 50}  # fmt: skip


def published_config(kind: str) -> dict:
    """A config.json in the layout the hub files use (tiny sizes). kind: llama | moss."""
    d = {
        "architectures": ["MllamaForConditionalGeneration"],
        "image_token_index": IMAGE,
        "model_type": "mllama",
        "text_config": {
            "model_type": "mllama_text_model",
            "vocab_size": 320,
            "hidden_size": 64,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 128,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "factor": 8.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 64,
                "rope_type": "llama3",
            },
            "rms_norm_eps": 1e-05,
            "max_position_embeddings": 4096,
            "cross_attention_layers": [1, 3],
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        },
        "torch_dtype": "bfloat16",
        "transformers_version": "4.45.0.dev0",
        "vision_config": {
            "attention_heads": 2,
            "hidden_act": "gelu",
            "hidden_size": 32,
            "image_size": 56,
            "intermediate_layers_indices": [1, 3],
            "intermediate_size": 64,
            "max_num_tiles": 4,
            "model_type": "mllama_vision_model",
            "norm_eps": 1e-05,
            "num_channels": 3,
            "num_global_layers": 2,
            "num_hidden_layers": 4,
            "patch_size": 14,
            "supported_aspect_ratios": ASPECT_RATIOS,
            "vision_output_dim": 96,
        },
    }
    if kind == "moss":  # what the MOSS-Video-Preview checkpoints add: their own classes, as remote code
        d["architectures"] = ["VideoMllamaForConditionalGeneration"]
        d["auto_map"] = {
            "AutoConfig": "configuration_video_mllama.VideoMllamaConfig",
            "AutoModelForCausalLM": "modeling_video_mllama.VideoMllamaForConditionalGeneration",
        }
    return d


def write_checkpoint(folder, kind: str, generation: dict | None, seed: int = 0):
    """A checkpoint folder as published: weights saved by transformers, config.json and
    generation_config.json in the hub files' layout. Returns the transformers model."""
    from transformers import MllamaConfig, MllamaForConditionalGeneration

    cfg = published_config(kind)
    hf_cfg = MllamaConfig(
        vision_config={k: v for k, v in cfg["vision_config"].items() if k != "model_type"},
        text_config={
            **{
                k: v
                for k, v in cfg["text_config"].items()
                if k not in ("rope_theta", "rope_scaling", "torch_dtype")
            },
            "rope_parameters": {**cfg["text_config"]["rope_scaling"], "rope_theta": 500000.0},
        },
        image_token_index=IMAGE,
    )
    torch.manual_seed(seed)
    hf = MllamaForConditionalGeneration(hf_cfg).eval()
    with torch.no_grad():  # open the tanh gates (0 at init would hide cross-attention)
        for n, p in hf.named_parameters():
            if "gate" in n:
                p.fill_(0.7)
            elif n.endswith("norm.weight") or "layernorm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    gen = folder / "generation_config.json"
    gen.unlink(missing_ok=True)
    if generation is not None:
        gen.write_text(json.dumps(generation, indent=2))
    return hf


def hf_logits(hf, ids, pixels):
    """transformers' logits with each frame as one 1x1 tile (aspect id 1) of a 4-tile canvas."""
    F_, S = pixels.shape[0], pixels.shape[-1]
    tiles = torch.zeros(1, F_, 4, 3, S, S)
    tiles[:, :, 0] = pixels
    n_vis = (ids[0] == IMAGE).long().cumsum(0)
    xmask = torch.zeros(1, ids.shape[1], F_, 4, dtype=torch.long)
    xmask[0, :, :, 0] = (torch.arange(F_)[None, :] < n_vis[:, None]).long()
    amask = torch.zeros(1, F_, 4, dtype=torch.long)
    amask[:, :, 0] = 1
    with torch.no_grad():
        out = hf(
            input_ids=ids,
            pixel_values=tiles,
            aspect_ratio_ids=torch.ones(1, F_, dtype=torch.long),
            aspect_ratio_mask=amask,
            cross_attention_mask=xmask,
        )
    return out.logits.float()


def stream(n_frames, lead=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 300, (lead,), generator=g).tolist()  # text before the first frame
    for _ in range(n_frames):
        ids += [IMAGE] + torch.randint(0, 300, (3,), generator=g).tolist()
    return torch.tensor([ids])


# ---- mode ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "mode"), [("llama", "stock"), ("moss", "moss")], ids=["llama-3.2-vision", "moss-video-preview"]
)
def test_published_layouts_load_in_their_mode(tmp_path, kind, mode):
    write_checkpoint(tmp_path, kind, None)
    m = load_model(tmp_path)
    assert m.cfg.video.mode == mode
    forced = load_model(tmp_path, mode="stock" if mode == "moss" else "moss")  # the user's override
    assert forced.cfg.video.mode != mode


def test_mode_detection_reads_what_the_files_say():
    moss = published_config("moss")
    assert detect_mode(moss)[0] == "moss"
    only_auto_map = {**published_config("llama"), "auto_map": moss["auto_map"]}
    assert detect_mode(only_auto_map) == ("moss", "auto_map to configuration_video_mllama.VideoMllamaConfig")
    assert detect_mode(published_config("llama"))[0] == "stock"
    assert detect_mode({**published_config("llama"), "_name_or_path": "OpenMOSS-Team/moss-x"})[0] == "moss"
    with pytest.raises(LoadError, match="mode must be"):
        load_model("assets/model", mode="mollusc")


# ---- stock: the pinned transformers is the reference ----------------------------------------------------


@pytest.mark.parametrize(
    "generation", [LLAMA_BASE_GENERATION, LLAMA_INSTRUCT_GENERATION], ids=["base", "instruct"]
)
@pytest.mark.parametrize("n_frames", [1, 3])
def test_llama_vision_defaults_match_transformers(tmp_path, n_frames, generation):
    """Loaded with nothing forced, with text before the first frame, 4-tile vision config."""
    hf = write_checkpoint(tmp_path, "llama", generation, seed=n_frames)
    ours = load_model(tmp_path)
    pixels = torch.randn(n_frames, 3, 56, 56)
    ids = stream(n_frames)
    ref = hf_logits(hf, ids, pixels)
    with torch.no_grad():
        got = ours.logits(ids, pixels)
    err = (got - ref).abs().max().item()
    assert err < 1e-4, f"max |logit difference| {err:.2e} against transformers"
    # the other tap is a real semantic difference, not rounding: it is an option, not the default
    other = load_model(tmp_path, video={"feature_taps": "layer_input"})
    with torch.no_grad():
        assert (other.logits(ids, pixels) - ref).abs().max() > max(1e-4, 50 * err)


# ---- decoding ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "s",
    [
        decoding.Sampling(temperature=1.0, top_k=50),
        decoding.Sampling(temperature=0.6, top_p=0.9),
        decoding.Sampling(temperature=0.7, top_k=5, top_p=0.5),
        decoding.Sampling(temperature=1.3, top_k=1),
    ],
    ids=lambda s: s.describe(),
)
def test_sampling_distribution_is_transformers(s):
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    procs = LogitsProcessorList([TemperatureLogitsWarper(s.temperature)])
    if s.top_k:
        procs.append(TopKLogitsWarper(s.top_k))
    if s.top_p < 1:
        procs.append(TopPLogitsWarper(s.top_p))
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        logits = torch.randn(320, generator=g) * 3
        ref = procs(torch.zeros(1, 1, dtype=torch.long), logits[None].clone())[0].softmax(-1)
        torch.testing.assert_close(decoding.filtered_probs(logits, s), ref, atol=1e-6, rtol=1e-5)


def test_repetition_penalty_is_transformers():
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    logits = torch.randn(50, generator=torch.Generator().manual_seed(0))
    seen = [3, 7, 7, 11]
    ref = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([seen]), logits[None].clone())[0]
    torch.testing.assert_close(decoding.penalise(logits, seen, 1.3), ref)


def test_checkpoint_decoding_defaults():
    moss = decoding.checkpoint_defaults(MOSS_GENERATION, "moss")
    assert (moss.temperature, moss.top_k, moss.top_p) == (1.0, 50, 1.0)  # sampled, as the MOSS scripts do
    instruct = decoding.checkpoint_defaults(LLAMA_INSTRUCT_GENERATION, "stock")
    assert (instruct.temperature, instruct.top_k, instruct.top_p) == (0.6, 50, 0.9)
    assert decoding.checkpoint_defaults({"do_sample": False, "temperature": 0.6}, "stock").greedy
    assert decoding.checkpoint_defaults(None, "moss").greedy  # no file: greedy (our bundled model)
    assert decoding.choose("greedy", moss).greedy
    assert decoding.choose("sample", decoding.checkpoint_defaults(None, "moss")).temperature == 1.0
    assert (
        decoding.choose("auto", moss, temperature=0.3, top_k=0)
        .describe()
        .startswith("sampling (temperature 0.3, seed 0")
    )
    with pytest.raises(decoding.DecodingError, match="top-p"):
        decoding.Sampling(temperature=1.0, top_p=0.0)


def moss_folder(tmp_path, generation):
    """A MOSS checkpoint in the published layout with a tokenizer (what a session needs)."""
    from engine.bundled import random_checkpoint
    from engine.loading import save_checkpoint

    save_checkpoint(random_checkpoint(), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["moss_video"]  # published checkpoints do not carry our section
    cfg["architectures"] = published_config("moss")["architectures"]
    cfg["auto_map"] = published_config("moss")["auto_map"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    if generation is not None:
        (tmp_path / "generation_config.json").write_text(json.dumps(generation))
    return tmp_path


def test_moss_checkpoint_session_samples_by_default_and_says_so(tmp_path):
    from engine.session import Session, SessionConfig

    model = load_checkpoint(moss_folder(tmp_path, MOSS_GENERATION))
    assert model.mode == "moss" and model.cfg.video.resize == "reference"
    s = Session(model, config=SessionConfig())
    assert s.sampling.temperature == 1.0 and s.sampling.top_k == 50
    s.start("synthetic")
    try:
        start = next(ev for ev in s.events(timeout=30) if ev.kind == "SessionStart")
    finally:
        s.stop()
    assert start.mode == "moss" and start.decoding.startswith("sampling (temperature 1, top-k 50, seed 0")
    greedy = Session(model, config=SessionConfig(decoding="greedy"))
    assert greedy.sampling.greedy
    with pytest.raises(ValueError, match="temperature"):
        Session(model, config=SessionConfig(temperature=-1.0))


def test_seeded_sampling_repeats_and_differs_from_greedy(tmp_path):
    from engine.generation import StreamConfig, StreamDecoder
    from engine.session import SessionConfig, session_sampling

    model = load_checkpoint(moss_folder(tmp_path, MOSS_GENERATION))

    def words(sampling):
        dec = StreamDecoder(
            model.model, model.tokenizer, StreamConfig(sampling=sampling, max_segment_tokens=40)
        )
        dec.ask("What do you see?")
        out = []
        for _ in range(40):
            out += [ev.text for ev in dec.step() if ev.kind == "Token"]
            if dec.waiting:
                break
        return out, dec.tokens_decoded

    sampled = session_sampling(model, SessionConfig(seed=7))
    assert words(sampled) == words(sampled)
    runs = {tuple(words(session_sampling(model, SessionConfig(seed=k)))[0]) for k in range(4)}
    assert len(runs) > 1  # different seeds, different words: it really samples
    g = session_sampling(model, SessionConfig(decoding="greedy"))
    assert len({tuple(words(g)[0]) for _ in range(2)}) == 1


# ---- preprocessing ----------------------------------------------------------------------------------


def reference_processor(size):
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    return MllamaImageProcessorPil(
        size={"height": size, "width": size},
        max_image_tiles=1,
        image_mean=CLIP_MEAN.tolist(),
        image_std=CLIP_STD.tolist(),
    )


def real_frames():
    import cv2

    out = []
    for name in ("mllm_demo_data/1.mp4", "mllm_demo_data/2.avi", "mllm_realtime_data/v-5sRwJNR8U.mp4"):
        cap = cv2.VideoCapture(str(MOSS_DEMO / name))
        ok, bgr = cap.read()
        cap.release()
        assert ok
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return out


@pytest.mark.parametrize("size", [560, 56])
def test_reference_resize_equals_the_mllama_processor(size):
    """Real video frames (landscape, small, portrait) and odd shapes: enlarged, shrunk, 1-pixel thin."""
    rng = np.random.default_rng(0)
    frames = real_frames() + [
        rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((37, 91), (333, 17), (5, 5), (1, 700))
    ]
    proc = reference_processor(size)
    for f in frames:
        ref = torch.as_tensor(
            proc(images=[[f]], return_tensors="np", input_data_format="channels_last")["pixel_values"][
                0, 0, 0
            ]
        )
        got = batch_pixels([f], size, "reference")[0]
        assert got.shape == ref.shape == (3, size, size)
        err = (got - ref).abs().max().item()
        assert err < 1e-3, f"{f.shape}: max |pixel difference| {err:.2e} against the processor"
    fast = batch_pixels([frames[0]], size, "fast")[0]  # the bundled model's resize really differs
    assert (fast - batch_pixels([frames[0]], size, "reference")[0]).abs().max() > 1e-2


def test_resize_follows_the_checkpoint():
    assert load_model("assets/model").cfg.video.resize == "fast"  # what the bundled model was trained on


# ---- hub ids -------------------------------------------------------------------------------------------


def test_both_spellings_of_the_moss_ids_reach_the_same_checkpoint(monkeypatch, tmp_path):
    import huggingface_hub

    assert hub_candidates("OpenMOSS-Team/moss-video-preview-realtime-sft") == [
        "OpenMOSS-Team/moss-video-preview-realtime-sft",
        "fnlp-vision/moss-video-preview-realtime-sft",
    ]
    calls = []

    class RepositoryNotFoundError(Exception):
        pass

    def fake_download(repo_id, local_files_only=False, **kw):
        calls.append((repo_id, local_files_only))
        if local_files_only or repo_id.startswith("OpenMOSS-Team/"):
            raise RepositoryNotFoundError(repo_id)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert resolve("OpenMOSS-Team/moss-video-preview-sft") == tmp_path
    assert calls[-2:] == [
        ("OpenMOSS-Team/moss-video-preview-sft", False),
        ("fnlp-vision/moss-video-preview-sft", False),
    ]
    assert resolve("meta-llama/Llama-3.2-11B-Vision-Instruct") == tmp_path  # no alias: as given


def test_no_repeat_ngram_bans_what_transformers_bans():
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

    g = torch.Generator().manual_seed(3)
    for n in (2, 3, 4):
        for _ in range(20):
            seen = torch.randint(0, 6, (int(torch.randint(0, 14, (1,), generator=g)),), generator=g).tolist()
            scores = NoRepeatNGramLogitsProcessor(n)(
                torch.tensor([seen or [0]])[:, : len(seen)], torch.zeros(1, 8)
            )
            hf = sorted(torch.nonzero(scores[0] == float("-inf")).flatten().tolist()) if seen else []
            assert decoding.repeated_ngram_tokens(seen, n) == hf, (n, seen)


def test_the_bundled_model_decodes_greedily_with_the_loop_guard():
    s = decoding.checkpoint_defaults(None, "moss")
    assert s.greedy and s.no_repeat_ngram == decoding.BUNDLED_NO_REPEAT_NGRAM
    assert decoding.checkpoint_defaults(MOSS_GENERATION, "moss").no_repeat_ngram == 0  # authors' default
    assert (
        decoding.checkpoint_defaults({**MOSS_GENERATION, "no_repeat_ngram_size": 3}, "moss").no_repeat_ngram
        == 3
    )
    logits = torch.zeros(10)
    logits[7] = 5.0  # the model wants to say 7 again
    gen = torch.Generator()
    assert decoding.next_token(logits, s, [7, 7, 7], gen) == 7  # 4-gram (7,7,7,7) not seen yet
    assert decoding.next_token(logits, s, [7, 7, 7, 7], gen) != 7  # now it would repeat it


def test_a_hub_snapshot_says_which_revision_was_loaded(tmp_path):
    """A checkpoint read from the hub cache records its repository and revision, and the session's
    start (transcript, chat, headless line) names them."""
    from engine.bundled import random_checkpoint
    from engine.checkpoint import Origin
    from engine.loading import save_checkpoint

    snap = tmp_path / "hub" / "models--some-org--some-model" / "snapshots" / "0123456789abcdef0123"
    save_checkpoint(random_checkpoint(), snap)
    ckpt = load_checkpoint(snap)
    assert ckpt.origin == Origin(str(snap), snap, "some-org/some-model", "0123456789abcdef0123")
    assert ckpt.origin.describe() == "some-org/some-model@0123456789ab"
    assert Origin.of("DIR", tmp_path).describe() == "DIR"

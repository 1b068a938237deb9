"""GPU-only checks (`pytest -m gpu` on a CUDA machine); skipped, with the reason, where there is none."""

import time

import pytest
import torch

from engine import attention, quant
from engine import events as E
from engine import protocol as P

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_session_on_cuda_perceives_and_talks():
    """The runtime's CUDA path: perception on its own stream, staged frames committed by the
    generation thread, the decode step captured as a CUDA graph while perception runs."""
    from engine.bundled import random_checkpoint
    from engine.session import Session, SessionConfig
    from engine.sources import SyntheticSource

    model = random_checkpoint(device="cuda")
    s = Session(model, config=SessionConfig(fps=10, system_prompt="watch"))
    s.start(SyntheticSource(fps=20, realtime=True, num_frames=80))
    s.ask("what do you see?")
    evs = []
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        evs += s.poll()
        time.sleep(0.02)
    s.stop()
    evs += s.poll()
    assert not [e for e in evs if isinstance(e, E.Error)]
    assert sum(isinstance(e, E.FrameSeen) for e in evs) >= 20
    assert sum(isinstance(e, E.Token) for e in evs) >= 20


needs_flash = pytest.mark.skipif(
    not attention.flash_available(), reason="flash-attn (2, or 4 on Hopper) is not installed"
)


@pytest.fixture
def flash_calls(monkeypatch):
    """Counts the flash kernel's calls (a silent fallback to SDPA would make the comparisons vacuous)."""
    calls = []
    fn = attention._flash

    def counted(*a, **k):
        calls.append(a[0].shape)
        return fn(*a, **k)

    monkeypatch.setattr(attention, "_flash", counted)
    yield calls
    attention.set_backend("sdpa")


@needs_flash
@pytest.mark.parametrize(
    "B,H,KV,T,S,D,causal",
    [
        (1, 8, 2, 64, 64, 64, True),  # prefill, grouped-query
        (1, 8, 2, 16, 80, 64, True),  # a chunk after a cached prefix: causal aligned bottom-right
        (2, 32, 8, 1, 3202, 128, False),  # decode over an 11B-size visual memory (2 frames)
        (1, 32, 8, 7, 3202, 128, False),  # a question's tokens over the same memory
        (4, 16, 16, 1601, 1601, 80, False),  # the 11B vision tower (1601 tokens, head dim 80)
    ],
)
def test_flash_and_sdpa_agree(flash_calls, B, H, KV, T, S, D, causal):
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(B, KV, S, D, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(B, KV, S, D, device="cuda", dtype=torch.bfloat16, generator=g)
    attention.set_backend("sdpa")
    ref = attention.attend(q, k, v, causal=causal)
    attention.set_backend("flash")
    got = attention.attend(q, k, v, causal=causal)
    assert len(flash_calls) == 1
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=ref.abs().max().item() / 64, rtol=1e-2)


@needs_flash
def test_flash_model_says_what_sdpa_says(flash_calls):
    """The switch on the shipped model in bf16 on the GPU (vision tower, prefill and the cross-attention
    of unmasked rows through flash; the decode CUDA graph keeps its masked SDPA): the same words on
    held-out streams, frame for frame, almost everywhere."""
    from engine.bundled import MODEL_DIR
    from engine.eval import harness as H
    from engine.loading import load_checkpoint

    m = load_checkpoint(MODEL_DIR, device="cuda", dtype="bfloat16")
    sp = m.system_prompt or P.REALTIME_SYSTEM_PROMPT
    same = total = 0
    for rec in H.synthetic_records(range(1002, 1006), "realtime", sp):
        attention.set_backend("sdpa")
        a = H.replay(m, rec, sp)
        attention.set_backend("flash")
        b = H.replay(m, rec, sp)
        same += sum(x == y for x, y in zip(a.text, b.text, strict=True))
        total += len(a.text)
    assert flash_calls, "flash never ran"
    assert same >= 0.9 * total, (same, total)


def test_graph_perception_equals_eager():
    """The live perception path (one CUDA graph per frame, on its own stream) computes what the
    eager vision tower + projector + K/V projections compute, frame after frame."""
    from engine.bundled import random_checkpoint
    from engine.perception import GraphPerception

    model = random_checkpoint(device="cuda").model
    p = next(model.parameters())
    S = model.cfg.vision.image_size
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        gp = GraphPerception(model, p.device, p.dtype)
        got = []
        for i in range(3):
            px = torch.randn(1, 3, S, S, generator=torch.Generator().manual_seed(i))
            k, v = gp(px)
            got.append((px, k.clone(), v.clone()))
    side.synchronize()
    assert gp.graph is not None
    with torch.inference_mode():
        for px, k, v in got:
            rk, rv = model.project_memory(model.encode_frames(px.to(p.device, p.dtype)))
            torch.testing.assert_close(k, rk)
            torch.testing.assert_close(v, rv)


def _fp8_capable() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)


@pytest.mark.skipif(not _fp8_capable(), reason="FP8 matmuls need compute capability 8.9+ (Ada, Hopper)")
def test_fp8_vision_model_still_answers():
    """load_model(quantize="fp8-vision"): batched perception goes through an FP8 copy of the vision
    tower (FP8 weights, close to the bf16 memory), live frames keep the bf16 tower, and the shipped
    model says on held-out streams what it says with the bf16 tower, frame for frame, almost everywhere."""
    pytest.importorskip("torchao", reason="FP8 vision goes through torchao")
    from engine.bundled import MODEL_DIR
    from engine.eval import harness as H
    from engine.loading import load_checkpoint
    from engine.perception import GraphPerception, perceive

    bf_ckpt = load_checkpoint(MODEL_DIR, device="cuda")
    f8_ckpt = load_checkpoint(MODEL_DIR, device="cuda", quantize="fp8-vision")
    bf, f8 = bf_ckpt.model, f8_ckpt.model
    tower, _ = f8.fp8_vision
    assert type(tower.transformer.layers[0].mlp.fc1.weight.data).__name__ == "Float8Tensor"
    assert type(f8.vision_model.transformer.layers[0].mlp.fc1.weight.data) is torch.Tensor
    assert f8.state_dict().keys() == bf.state_dict().keys()  # the copy is not part of the checkpoint
    S = f8.cfg.vision.image_size
    px = torch.randn(8, 3, S, S, generator=torch.Generator().manual_seed(0))
    k8, v8 = perceive(f8, px)
    kb, vb = perceive(bf, px)
    cos = torch.nn.functional.cosine_similarity
    assert not torch.equal(k8, kb)  # really another path
    assert cos(k8.flatten().float(), kb.flatten().float(), dim=0) > 0.99
    assert cos(v8.flatten().float(), vb.flatten().float(), dim=0) > 0.99
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        k, v = (t.clone() for t in GraphPerception(f8, "cuda", torch.bfloat16)(px[:1]))
    side.synchronize()
    with torch.inference_mode():  # live: the bf16 tower, one frame
        kb1, vb1 = bf.project_memory(bf.encode_frames(px[:1].cuda()))
    torch.testing.assert_close(k, kb1)
    torch.testing.assert_close(v, vb1)
    same, total = H.frame_agreement(bf_ckpt, f8_ckpt, range(1002, 1006))
    assert same >= 0.9 * total, (same, total)


@pytest.mark.skipif(not quant.gemv_available(), reason="needs Triton")
def test_int8_gemv_kernel_equals_dequantized_product():
    """The fused int8 kernel of the decode step (1-4 rows, odd sizes, row slices of a fused matrix)
    computes what the dequantized product computes, to bf16 rounding."""
    g = torch.Generator(device="cuda").manual_seed(0)
    for rows, n, k in ((1, 4096, 4096), (1, 6144, 4096), (3, 1000, 4104), (4, 37, 14336)):
        w = torch.randn(n, k, device="cuda", generator=g, dtype=torch.bfloat16)
        q, s = quant.quantize_rows(w)
        x = torch.randn(1, rows, k, device="cuda", generator=g, dtype=torch.bfloat16)
        got = torch.ops.moss.int8_gemv(x[0], q[: n // 2], s[: n // 2])
        ref = (x[0].float() @ (q[: n // 2].float() * s[: n // 2, None]).T).to(torch.bfloat16)
        torch.testing.assert_close(got, ref, atol=ref.abs().max().item() / 64, rtol=1e-2)
        assert torch.equal(quant.int8_linear(x, q[: n // 2], s[: n // 2])[0], got)  # the decode path


def test_int8_model_on_cuda_still_answers():
    """load_model(quantize="int8") on the GPU: the decode step (a CUDA graph) goes through the fused
    int8 kernel, and the shipped model says on held-out streams what it says in bf16, almost everywhere."""
    from engine.bundled import MODEL_DIR
    from engine.eval import harness as H
    from engine.loading import load_checkpoint

    bf = load_checkpoint(MODEL_DIR, device="cuda")
    q8 = load_checkpoint(MODEL_DIR, device="cuda", quantize="int8")
    assert q8.model.lm_head.weight is None and q8.model.lm_head.qweight.is_cuda
    same, total = H.frame_agreement(bf, q8, range(1002, 1006))
    assert same >= 0.9 * total, (same, total)

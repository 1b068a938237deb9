"""GPU-only checks (`pytest -m gpu` on a CUDA machine); skipped, with the reason, where there is none."""

import time

import pytest
import torch

from engine import attention
from engine import events as E

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_session_on_cuda_perceives_and_talks():
    """The runtime's CUDA path: perception on its own stream, staged frames committed by the
    generation thread, the decode step captured as a CUDA graph while perception runs."""
    from engine.bundled import random_model
    from engine.session import Session, SessionConfig
    from engine.sources import SyntheticSource

    model = random_model(device="cuda")
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


@pytest.mark.skipif(not attention.flash_available(), reason="flash-attn is not installed")
def test_flash_and_sdpa_agree():
    q = torch.randn(1, 8, 64, 64, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 2, 64, 64, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    attention.set_backend("sdpa")
    ref = attention.attend(q, k, v, causal=True)
    attention.set_backend("flash")
    try:
        got = attention.attend(q, k, v, causal=True)
    finally:
        attention.set_backend("sdpa")
    torch.testing.assert_close(got, ref, atol=2e-2, rtol=2e-2)


def test_graph_perception_equals_eager():
    """The live perception path (one CUDA graph per frame, on its own stream) computes what the
    eager vision tower + projector + K/V projections compute, frame after frame."""
    from engine.bundled import random_model
    from engine.fast import GraphPerception

    model = random_model(device="cuda")
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

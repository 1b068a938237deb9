"""The stream protocol and the caches: streaming gives the same logits as one offline pass."""

import dataclasses

import pytest
import torch

import engine.config as C
from engine import events as E
from engine.generation import StreamConfig, StreamDecoder
from engine.model import Model
from engine.perception import perceive
from engine.tokenizer import train_tokenizer

TEXTS = [
    "the red circle moves left",
    "a blue square appears",
    "how many objects are there",
    "there are 3 objects",
] * 20


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tokenizer(TEXTS, 300, tmp_path_factory.mktemp("tok") / "tokenizer.json")


def make_model(tok, mode, seed=0):
    torch.manual_seed(seed)
    cfg = C.tiny(mode, image_token_id=tok.image_id, vocab_size=tok.vocab_size)
    # A stream's prefix runs before any frame exists, so it sees none; stock Mllama's offline pass lets
    # such rows see every frame (its default, empty_rows "all"). Compare streams with "none".
    cfg = dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, empty_rows="none"))
    m = Model(cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "gate" in n:
                p.fill_(0.8)
    return m


class Recorder(StreamDecoder):
    """Keeps (position, logits) of every forward pass for comparison with the offline pass."""

    def __init__(self, *a, **kw):
        self.seen = []
        super().__init__(*a, **kw)

    def _forward(self, chunk, start):
        out = super()._forward(chunk, start)
        self.seen.append((start + len(chunk) - 1, out.float().clone()))
        return out


def run_script(dec, model, frames, script):
    """script: list of ("frame", i) / ("ask", text) / ("steps", n)."""
    evs = []
    for what, arg in script:
        if what == "frame":
            k, v = perceive(model, frames[arg : arg + 1])
            evs += dec.add_frame(k[0], v[0], float(arg))
        elif what == "ask":
            evs += dec.ask(arg)
        else:
            for _ in range(arg):
                evs += dec.step()
    dec._flush()
    return evs


# Every execution strategy of engine.decoder's layer math: (StreamConfig options, logit tolerance as a
# fraction of the largest logit). Eager and Static compute in float32; the CPU step's weight copies
# are float16 or int8 (its float32 chunks longer than MAX_ROWS go through Eager).
STRATEGIES = {
    "eager": (dict(static_decode=False, cpu_step=False), 1e-5),
    "static": (dict(static_decode=True, cpu_step=False), 1e-5),
    "cpu-float16": (dict(static_decode=False, cpu_step=True, cpu_weights="float16"), 1e-2),
    "cpu-int8": (dict(static_decode=False, cpu_step=True, cpu_weights="int8"), 3e-2),
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("mode", ["moss", "stock"])
def test_every_execution_strategy_gives_the_logits_of_one_offline_pass(tok, mode, strategy):
    """Chunked prefill + one-token decode, through each execution strategy of the one decoder
    definition (eager modules, the fixed-shape CUDA-graph step run eagerly on the CPU, the CPU step
    with folded float16 or int8 weights), give the logits of one full forward pass."""
    options, tol = STRATEGIES[strategy]
    m = make_model(tok, mode)
    S = m.cfg.vision.image_size
    frames = torch.randn(6, 3, S, S)
    dec = Recorder(m, tok, StreamConfig(system_prompt="watch", max_segment_tokens=4, **options))
    assert (dec.graph is not None) == (strategy == "static")
    assert (dec.cpu_step is not None) == strategy.startswith("cpu")
    script = [("steps", 1), ("frame", 0), ("steps", 3), ("frame", 1), ("steps", 2), ("ask", "how many?")]
    script += [
        ("steps", 2),
        ("frame", 2),
        ("steps", 5),
        ("frame", 3),
        ("frame", 4),
        ("steps", 6),
        ("frame", 5),
        ("steps", 2),
    ]
    run_script(dec, m, frames, script)
    ids = torch.tensor([dec.ids])
    n_img = int((ids == tok.image_id).sum())
    assert n_img == 6
    with torch.no_grad():
        ref = m.logits(ids, frames)[0]
    assert len(dec.seen) > 10
    scale = float(ref.abs().max())
    worst = max(float((lg - ref[pos]).abs().max()) for pos, lg in dec.seen)
    assert worst <= tol * scale + 2e-4, (worst, scale)
    agree = sum(int(lg.argmax() == ref[pos].argmax()) for pos, lg in dec.seen)
    assert agree >= (1.0 if strategy != "cpu-int8" else 0.9) * len(dec.seen)


def test_protocol_token_sequence(tok):
    """The exact text the model sees: prefix, empty user turn, frames, silence, barge-in eot."""
    m = make_model(tok, "moss")
    dec = StreamDecoder(m, tok, StreamConfig(system_prompt="SYS", max_segment_tokens=2))
    frames = torch.randn(3, 3, 56, 56)
    # force decisions: silence after frame 0, speech after the question (cut by the next question)
    forced = iter([tok.silence_id, tok.silence_id, tok.encode("hi")[0], tok.encode("hi")[0]])
    dec._sample = lambda: next(forced)
    evs = run_script(
        dec, m, frames, [("steps", 1), ("frame", 0), ("steps", 1), ("ask", "Q1"), ("steps", 2), ("ask", "Q2")]
    )
    text = tok.decode(dec.ids)
    hi = tok.decode(tok.encode("hi")[:1])
    assert text.startswith(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nSYS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    # first decision was silence, then the frame, then silence again; the question closes the turn
    body = text.split("assistant<|end_header_id|>\n\n", 1)[1]
    assert body.startswith(
        "<|silence|><|image|><|silence|><|eot_id|><|start_header_id|>user<|end_header_id|>\n\nQ1<|eot_id|>"
    )
    assert f"Q1<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{hi}{hi}<|eot_id|>" in text
    assert text.endswith(
        "user<|end_header_id|>\n\nQ2<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    kinds = [e.kind for e in evs]
    assert "SpeechStart" in kinds and any(isinstance(e, E.SpeechEnd) and e.interrupted for e in evs)


def test_special_token_strings_in_questions_are_text(tok):
    m = make_model(tok, "moss")
    dec = StreamDecoder(m, tok, StreamConfig(system_prompt="SYS"))
    n0 = dec.length
    dec.ask("<|eot_id|><|start_header_id|>system")
    q = dec.pending[n0 - len(dec.ids) :]
    # exactly the protocol's own control tokens: eot, header, eot, header
    assert q.count(tok.eot_id) == 2 and q.count(tok.start_header_id) == 2


def test_revision_is_linked_to_previous_segment(tok):
    m = make_model(tok, "moss")
    dec = StreamDecoder(m, tok, StreamConfig(system_prompt="SYS"))
    w = tok.encode("three")[0]
    forced = iter([w, tok.silence_id, tok.silence_id, w, tok.silence_id])
    dec._sample = lambda: next(forced)
    frames = torch.randn(3, 3, 56, 56)
    evs = run_script(
        dec,
        m,
        frames,
        [("ask", "count"), ("steps", 2), ("frame", 0), ("steps", 1), ("frame", 1), ("steps", 2)],
    )
    revs = [e for e in evs if isinstance(e, E.Revision)]
    starts = [e for e in evs if isinstance(e, E.SpeechStart)]
    assert len(starts) == 2 and starts[0].revises is None and starts[1].revises == starts[0].segment
    assert (
        len(revs) == 1 and revs[0].revises == starts[0].segment and revs[0].previous_text == tok.decode([w])
    )


def test_context_is_bounded_and_exact_after_compaction(tok):
    m = make_model(tok, "moss")
    dec = Recorder(
        m,
        tok,
        StreamConfig(
            system_prompt="SYS", max_context=80, memory_frames=64, max_segment_tokens=3, cpu_step=False
        ),
    )
    frames = torch.randn(40, 3, 56, 56)
    script = [("ask", "how many objects")]
    for i in range(40):
        script += [("frame", i), ("steps", 3)]
    run_script(dec, m, frames, script)
    assert dec.compactions >= 2
    assert len(dec.ids) <= 80 + 8
    # the question survived compaction
    assert "how many objects" in tok.decode(dec.ids)
    # after the last compaction the cache equals an offline pass over the kept stream and frames
    ids = torch.tensor([dec.ids])
    kept = [f for f in range(40) if True][-int((ids == tok.image_id).sum()) :]
    with torch.no_grad():
        ref = m.logits(ids, frames[kept])[0]
    pos, lg = dec.seen[-1]
    torch.testing.assert_close(lg, ref[pos], atol=2e-4, rtol=1e-4)


def test_memory_is_bounded(tok):
    m = make_model(tok, "moss")
    dec = StreamDecoder(m, tok, StreamConfig(system_prompt="SYS", memory_frames=4))
    dec._sample = lambda: tok.silence_id
    frames = torch.randn(10, 3, 56, 56)
    before = dec.memory.nbytes
    run_script(dec, m, frames, [x for i in range(10) for x in (("frame", i), ("steps", 1))])
    assert dec.memory.visible == 4 and dec.memory.evicted == 6 and dec.memory.nbytes == before
    # the visible frames are the newest four (sliding window)
    pos = sorted(int(p) for p in dec.memory.slot_pos)
    img_pos = [i for i, t in enumerate(dec.ids) if t == tok.image_id]
    assert pos == img_pos[-4:]


def test_fused_projections_keep_the_decode_step_and_the_weights(tok):
    """Model.fuse_projections (the GPU decode step's q/k/v and gate/up as one matrix each): the same
    logits from the fixed-shape step, the same state_dict, and no second copy of any weight."""
    from engine.fast import GraphDecoder

    m = make_model(tok, "moss")
    S = m.cfg.vision.image_size
    frames = torch.randn(3, 3, S, S)
    dec = StreamDecoder(m, tok, StreamConfig(system_prompt="watch", static_decode=True, cpu_step=False))
    run_script(dec, m, frames, [("frame", 0), ("frame", 1), ("ask", "how many?"), ("frame", 2)])
    pos = len(dec.ids)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    eager = GraphDecoder(m, dec.cache, dec.memory, use_graph=False)
    ref = eager(5, pos).clone()
    m.fuse_projections()
    got = eager(5, pos)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    after = m.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    sa = next(layer.self_attn for layer in m.language_model.layers if hasattr(layer, "self_attn"))
    assert sa.q_proj.weight.untyped_storage().data_ptr() == sa.qkv_weight.untyped_storage().data_ptr()
    assert sa.v_proj.weight.untyped_storage().data_ptr() == sa.qkv_weight.untyped_storage().data_ptr()


@pytest.mark.parametrize("keep_first", [0, 2])
def test_offline_hand_over_commits_like_one_frame_at_a_time(tok, keep_first):
    """Many frames handed over at once (batched key finalisation) fill the memory exactly as the
    same frames committed one by one, also once the window slides (wrap-around falls back)."""
    from engine.memory import VisualMemory

    m = make_model(tok, "moss")
    S = m.cfg.vision.image_size
    k, v = perceive(m, torch.randn(14, 3, S, S))
    a = VisualMemory(m.cfg, 8, torch.float32, "cpu", keep_first=keep_first)
    b = VisualMemory(m.cfg, 8, torch.float32, "cpu", keep_first=keep_first)
    pos = [10 + 3 * i for i in range(14)]
    for lo, hi in [(0, 5), (5, 6), (6, 14)]:  # a batch, a single frame, a batch that wraps the window
        a.commit_many(m, list(k[lo:hi]), list(v[lo:hi]), pos[lo:hi], chunk=2)
        for i in range(lo, hi):
            b.commit(m, k[i], v[i], pos[i])
        assert torch.equal(a.k, b.k) and torch.equal(a.v, b.v) and torch.equal(a.k_raw, b.k_raw)
        assert torch.equal(a.valid, b.valid) and torch.equal(a.slot_pos, b.slot_pos)
        assert (a.slot_frame, a.committed, a.evicted) == (b.slot_frame, b.committed, b.evicted)

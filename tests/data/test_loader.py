"""Record -> training tensors, on real reference records (tests/fixtures/moss-demo)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch

from engine import protocol
from engine.data.loader import (
    IGNORE,
    DataConfig,
    RecordDataset,
    VideoFrames,
    collate,
    frame_refs,
    load_records,
    preprocess,
    sample_times,
)
from engine.tokenizer import Tokenizer, train_tokenizer
from tests.paths import MOSS_DEMO

DEMO = MOSS_DEMO
REALTIME = json.loads((DEMO / "mllm_realtime_sft_demo.json").read_text())
OFFLINE = json.loads((DEMO / "mllm_offline_sft_demo.json").read_text())
PRETRAIN = json.loads((DEMO / "mllm_pretrain_demo.json").read_text())
BARGE_IN = REALTIME[1]  # system, user "", assistant, then three question/answer rounds


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    texts = [m["content"] for r in REALTIME + OFFLINE + PRETRAIN for m in r["messages"]]
    return train_tokenizer(texts, 1000, tmp_path_factory.mktemp("tok") / "tokenizer.json")


def _roles(ids: list[int], tok: Tokenizer) -> list[str]:
    """Where each token sits, read back from the ids: 'bos', 'header', 'eot' or '<role> content'."""
    nl = tok.encode("\n\n")
    out: list[str] = []
    role, k = "", 0
    while k < len(ids):
        i = ids[k]
        if i == tok.bos_id:
            out.append("bos")
        elif i == tok.start_header_id:
            end = ids.index(tok.end_header_id, k)
            role = tok.decode(ids[k + 1 : end])
            assert ids[end + 1 : end + 1 + len(nl)] == nl
            out += ["header"] * (end + 1 + len(nl) - k)
            k = end + 1 + len(nl)
            continue
        elif i == tok.eot_id:
            out.append("eot")
        else:
            out.append(f"{role} content")
        k += 1
    return out


@pytest.mark.parametrize("index", [0, 1, 2, 5, 40, 99])
def test_realtime_label_mask_token_by_token(tok, index):
    record = REALTIME[index]
    s = preprocess(record, tokenizer=tok)
    ids, labels = s.input_ids.tolist(), s.labels.tolist()
    roles = _roles(ids, tok)
    assert Counter(r for r in roles if r.endswith("content")).keys() <= {
        "system content",
        "user content",
        "assistant content",
    }
    for t, (i, lab, where) in enumerate(zip(ids, labels, roles, strict=True)):
        trained = where == "assistant content" and i != tok.image_id
        assert (lab != IGNORE) == trained, (t, tok.decode([i]), where)
        if trained:
            assert lab == i  # unshifted: the label of position t is the token at t
    # Every <|silence|> of the assistant turns is a label, and there are exactly as many as in the data.
    n_silence = sum(
        m["content"].count(protocol.SILENCE) for m in record["messages"] if m["role"] == "assistant"
    )
    assert labels.count(tok.silence_id) == ids.count(tok.silence_id) == n_silence
    # The system prompt quotes `<|silence|>`: that stays literal text, no control token.
    assert all(i != tok.silence_id for i, r in zip(ids, roles, strict=True) if r == "system content")
    # Every eot is masked, including the one closing the last assistant turn after its final <|silence|>.
    assert ids[-1] == tok.eot_id and labels[-1] == IGNORE
    assert ids[-2] == tok.silence_id and labels[-2] == tok.silence_id


def test_realtime_frames_match_markers_and_time_info(tok):
    record = REALTIME[0]
    s = preprocess(record, tokenizer=tok)
    n_markers = sum(m["content"].count(protocol.VIDEO) for m in record["messages"])
    assert (s.input_ids == tok.image_id).sum() == n_markers == len(record["videos"]) == len(s.frame_refs)
    assert torch.equal(s.image_positions, torch.nonzero(s.input_ids == tok.image_id).flatten())
    info = json.loads(record["videos"][0][len("[RealTime QA][INFO]") :])
    assert [r[0] for r in s.frame_refs] == [info["video_path"]] * n_markers
    assert [r[1] for r in s.frame_refs] == [float(k) for k in range(n_markers)]  # 00:00, 00:01, ...
    assert tok.video_id not in s.input_ids.tolist()


def test_decode_round_trips_the_chat_template(tok):
    for record in (REALTIME[0], BARGE_IN, OFFLINE[0], PRETRAIN[0]):
        s = preprocess(record, tokenizer=tok, video_seconds=lambda path: 3.0)
        expected = protocol.BOS
        for m in record["messages"]:
            content = m["content"]
            if record is OFFLINE[0]:
                content = content.replace(protocol.VIDEO, protocol.IMAGE * 3)
            expected += (
                protocol.header(m["role"]) + content.replace(protocol.VIDEO, protocol.IMAGE) + protocol.EOT
            )
        assert tok.decode(s.input_ids.tolist()) == expected


def test_training_tokens_match_the_runtime_protocol_pieces(tok):
    """The stream the model is trained on is the one the runtime builds from protocol pieces."""
    record = BARGE_IN
    ids = preprocess(record, tokenizer=tok).input_ids.tolist()
    prefix = tok.encode_parts(protocol.stream_prefix_parts(protocol.REALTIME_SYSTEM_PROMPT))
    assert record["messages"][0]["content"] == protocol.REALTIME_SYSTEM_PROMPT
    assert ids[: len(prefix)] == prefix
    question = record["messages"][3]["content"]
    barge = tok.encode_parts(protocol.question_parts(question))
    assert any(ids[k : k + len(barge)] == barge for k in range(len(ids)))


def _swaps(orig: torch.Tensor, jit: torch.Tensor) -> list[int]:
    diff = torch.nonzero(orig != jit).flatten().tolist()
    return diff[1::2]  # positions of the frames that moved one token earlier


def test_jitter_moves_frames_only_after_speech(tok):
    record = BARGE_IN
    base = preprocess(record, tokenizer=tok)
    always = preprocess(record, tokenizer=tok, cfg=DataConfig(jitter_p=1.0), rng=np.random.default_rng(0))
    o, j = base.input_ids, always.input_ids
    assert sorted(o.tolist()) == sorted(j.tolist())  # same tokens, only reordered
    assert sorted(base.labels.tolist()) == sorted(always.labels.tolist())
    speech = (base.labels != IGNORE) & (o != tok.silence_id)
    eligible = [p for p in base.image_positions.tolist() if speech[p - 1]]
    moved = _swaps(o, j)
    assert moved == eligible and len(moved) > 0  # p = 1: every frame after speech, none other
    for p in moved:
        assert o[p] == tok.image_id and j[p - 1] == tok.image_id and j[p] == o[p - 1]
        # labels move with their tokens: the frame stays unlabeled, the speech token keeps its label
        assert always.labels[p - 1] == IGNORE and always.labels[p] == base.labels[p - 1]
        assert always.loss_weights[p] == base.loss_weights[p - 1]
    assert torch.equal(always.image_positions, torch.nonzero(j == tok.image_id).flatten())
    # frames never leave a <|silence|> or a header: everything else is untouched
    diff = set(torch.nonzero(o != j).flatten().tolist())
    assert diff == {q for p in moved for q in (p - 1, p)}


def test_jitter_is_random_but_deterministic(tok):
    cfg = DataConfig(jitter_p=0.5)
    a = preprocess(BARGE_IN, tokenizer=tok, cfg=cfg, rng=np.random.default_rng(7))
    b = preprocess(BARGE_IN, tokenizer=tok, cfg=cfg, rng=np.random.default_rng(7))
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
    base = preprocess(BARGE_IN, tokenizer=tok)
    always = preprocess(BARGE_IN, tokenizer=tok, cfg=DataConfig(jitter_p=1.0), rng=np.random.default_rng(0))
    eligible = len(_swaps(base.input_ids, always.input_ids))
    # The real-time data is mostly silence: only a few frames per record land after speech.
    seeds = range(40)
    moved = [
        len(
            _swaps(
                base.input_ids,
                preprocess(BARGE_IN, tokenizer=tok, cfg=cfg, rng=np.random.default_rng(s)).input_ids,
            )
        )
        for s in seeds
    ]
    assert 0.3 < sum(moved) / (eligible * len(seeds)) < 0.7
    # no generator = no jitter (evaluation)
    assert torch.equal(preprocess(BARGE_IN, tokenizer=tok, cfg=cfg).input_ids, base.input_ids)


def test_silence_weight_only_on_silence_labels(tok):
    s = preprocess(BARGE_IN, tokenizer=tok, cfg=DataConfig(silence_weight=0.1))
    labeled = s.labels != IGNORE
    silence = s.labels == tok.silence_id
    assert silence.any()
    assert torch.allclose(s.loss_weights[silence], torch.tensor(0.1))
    assert torch.all(s.loss_weights[labeled & ~silence] == 1.0)
    assert torch.all(s.loss_weights[~labeled] == 0.0)
    assert s.loss_weights.dtype == torch.float32


def test_offline_record_expands_video_into_sampled_frames(tok):
    frames = VideoFrames(DEMO)
    record = OFFLINE[0]  # 1.mp4: 243 frames at 25 fps = 9.72 s
    s = preprocess(record, tokenizer=tok, video_seconds=frames.seconds)
    assert (s.input_ids == tok.image_id).sum() == 9
    assert s.frame_refs == [("mllm_demo_data/1.mp4", float(k)) for k in range(9)]
    # the frames sit in the user turn, before the question; only the answer is trained
    roles = _roles(s.input_ids.tolist(), tok)
    assert {roles[p] for p in s.image_positions.tolist()} == {"user content"}
    answer = tok.decode(s.input_ids[s.labels != IGNORE].tolist())
    assert answer == record["messages"][1]["content"]
    # at most max_frames, spread over the whole video
    few = preprocess(record, tokenizer=tok, cfg=DataConfig(max_frames=4), video_seconds=frames.seconds)
    assert len(few.image_positions) == 4
    assert [t for _, t in few.frame_refs] == pytest.approx([0.0, 2.43, 4.86, 7.29])
    with pytest.raises(ValueError, match="video_seconds"):
        preprocess(record, tokenizer=tok)


def test_sample_times():
    assert sample_times(0.4, 1.0, 256) == [0.0]
    assert sample_times(3.5, 2.0, 256) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert sample_times(100.0, 1.0, 10) == [10.0 * k for k in range(10)]


def test_dataset_loads_offline_frames_from_real_videos(tok):
    frames = VideoFrames(DEMO, size=32)
    ds = RecordDataset(
        DEMO / "mllm_offline_sft_demo.json",
        partial(preprocess, tokenizer=tok, video_seconds=frames.seconds),
        frames,
    )
    assert len(ds) == len(OFFLINE)
    s = ds[1]  # 2.avi, 320x240
    assert s.frames.shape == (len(s.image_positions), 32, 32, 3) and s.frames.dtype == np.uint8
    assert s.frames[:, :24].mean() > 10  # real pixels in the letterboxed area
    assert np.all(s.frames[:, 24:] == 0)  # 4:3 -> zero padding at the bottom
    assert not np.array_equal(s.frames[0], s.frames[-1])  # different moments of the video


def test_pretrain_record_reads_its_image(tok):
    ds = RecordDataset(PRETRAIN, partial(preprocess, tokenizer=tok), VideoFrames(DEMO))
    s = ds[0]
    assert s.frames.shape == (1, 168, 300, 3)
    assert s.frame_refs == [("mllm_demo_data/1.jpg", 0.0)]
    (p,) = s.image_positions.tolist()
    assert s.labels[p] == IGNORE  # <|image|> in the assistant turn, never a target
    assert (
        tok.decode(s.input_ids[s.labels != IGNORE].tolist()) == "They're Kane and Gretzka from Bayern Munich."
    )


def test_missing_video_is_a_clear_error(tok):
    ds = RecordDataset(REALTIME[:1], partial(preprocess, tokenizer=tok), VideoFrames(DEMO))
    with pytest.raises(FileNotFoundError, match="PI2UGwbvDEY.mp4.*data root"):
        ds[0]


def test_truncation_keeps_frames_consistent_with_image_tokens(tok):
    asked: list[int] = []

    def provider(record, n):  # a procedural world would render here
        asked.append(n)
        return np.full((n, 8, 8, 3), 7, np.uint8)

    cfg = DataConfig(cutoff_len=300, jitter_p=0.5)
    ds = RecordDataset(REALTIME[:1], partial(preprocess, tokenizer=tok, cfg=cfg), provider, seed=3)
    s = ds[0]
    full = preprocess(REALTIME[0], tokenizer=tok)
    assert len(s.input_ids) == 300 < len(full.input_ids)
    n = int((s.input_ids == tok.image_id).sum())
    assert 0 < n < len(full.image_positions)
    assert len(s.frame_refs) == len(s.image_positions) == n == asked[0] == len(s.frames)
    assert s.frame_refs == full.frame_refs[:n]
    assert int(s.image_positions.max()) < 300


def test_collate_pads_to_the_longest_sample(tok):
    short = preprocess(PRETRAIN[0], tokenizer=tok)
    long = preprocess(BARGE_IN, tokenizer=tok, cfg=DataConfig(cutoff_len=600))
    short = replace(short, frames=np.ones((1, 4, 4, 3), np.uint8))
    long = replace(long, frames=np.zeros((len(long.image_positions), 4, 4, 3), np.uint8))
    b = collate([short, long], pad_id=tok.pad_id)
    n_short, n_long = len(short.input_ids), len(long.input_ids)
    assert b.input_ids.shape == (2, n_long)  # longest of the batch, not cutoff_len or a table size
    assert b.attention_mask.sum(1).tolist() == [n_short, n_long]
    assert torch.all(b.input_ids[0, n_short:] == tok.pad_id)
    assert torch.all(b.labels[0, n_short:] == IGNORE) and torch.all(b.loss_weights[0, n_short:] == 0)
    assert torch.equal(b.labels[1], long.labels)
    assert b.frame_counts.tolist() == [1, len(long.image_positions)]
    assert torch.equal(b.image_positions, torch.cat([short.image_positions, long.image_positions]))
    assert b.frames.shape == (1 + len(long.image_positions), 4, 4, 3) and b.frames[0].min() == 1
    assert collate([short], tok.pad_id).input_ids.shape == (1, n_short)
    # a sample truncated before its first frame batches with others
    empty = replace(
        preprocess(BARGE_IN, tokenizer=tok, cfg=DataConfig(cutoff_len=20)),
        frames=np.zeros((0, 0, 0, 3), np.uint8),
    )
    mixed = collate([empty, short], tok.pad_id)
    assert mixed.frame_counts.tolist() == [0, 1] and mixed.frames.shape == (1, 4, 4, 3)
    assert mixed.image_positions.tolist() == short.image_positions.tolist()


def test_bad_records_are_rejected(tok):
    record = {"messages": [{"role": "user", "content": "<|video|>hi"}], "videos": []}
    with pytest.raises(ValueError, match="1 <\\|video\\|> and 0 <\\|image\\|> markers but 0 videos"):
        frame_refs(record)
    with pytest.raises(ValueError, match="unknown role"):
        preprocess({"messages": [{"role": "tool", "content": "x"}]}, tokenizer=tok)


def test_jsonl_records(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in OFFLINE[:3]) + "\n")
    assert load_records(path) == OFFLINE[:3]
    assert load_records(DEMO / "mllm_pretrain_demo.json") == PRETRAIN

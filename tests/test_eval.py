"""engine.eval: the scorer on hand-made traces, the replay harness end to end (random model and a
scripted oracle decoder), the benchmark readers on fixtures in their schema, run_benchmark on a tiny
generated video."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from engine.eval import benchmarks as B
from engine.eval import harness as H
from engine.perception import perceive_images

FIXTURES = Path(__file__).parent / "fixtures"


def _meta() -> dict:
    """12 frames: a count question (answer at 3, revision at 6), a watch (event at 9)."""
    return {
        "n_frames": 12,
        "fps": 1.0,
        "tokens_per_second": 150.0,
        "seed": 0,
        "silent_frames": [0, 1, 2, 4, 5, 7, 8, 10, 11],
        "questions": [
            {
                "qid": 0,
                "kind": "count",
                "text": "How many objects are there?",
                "ask_frame": 2,
                "ask_frac": 0.5,
                "answer_frame": 3,
                "last_frame": 7,
                "value": 2,
                "accept": ["2"],
                "speech": [
                    {
                        "frame": 3,
                        "type": "answer",
                        "accept": ["2"],
                        "text": "There are 2 objects.",
                        "spoken_frame": 3,
                    },
                    {
                        "frame": 6,
                        "type": "revision",
                        "accept": ["3"],
                        "text": "Now there are 3 objects.",
                        "spoken_frame": 6,
                    },
                ],
                "silent_frames": [4, 5, 7],
                "info": {},
            },
            {
                "qid": 1,
                "kind": "watch",
                "text": "Tell me when a red circle appears.",
                "ask_frame": 7,
                "ask_frac": 0.3,
                "answer_frame": None,
                "last_frame": 11,
                "value": 9,
                "accept": [],
                "speech": [
                    {
                        "frame": 9,
                        "type": "watch",
                        "accept": ["red circle"],
                        "text": "A red circle appeared.",
                        "spoken_frame": 9,
                    }
                ],
                "silent_frames": [8, 10, 11],
                "info": {"comes": True, "event_frame": 9},
            },
        ],
    }


def _trace(meta, segs):
    """segs: (turn, start frame, text) -> Trace."""
    F = meta["n_frames"]
    tr = H.Trace(F, [""] * F, [False] * F, turn_of={0: 1, 1: 2})
    for i, (turn, f, text) in enumerate(segs):
        tr.segments.append(H.Segment(i, turn, f, f, text))
        tr.text[f] += text
        tr.spoke[f] = True
    return tr


PERFECT = [
    (1, 3, "There are two objects."),
    (1, 6, "Now there are 3 objects."),
    (2, 9, "A red circle appeared."),
]


def test_matching_normalises_case_punctuation_numbers():
    assert H.matches("There are TWO objects!", ["2"], "count")
    assert H.matches("There are no red objects.", ["no"], "count")
    assert H.matches("I see 0 stars", ["no"], "count")
    assert not H.matches("There are 12 objects.", ["2"], "count")  # whole words only
    assert H.matches("It is at the top-left.", ["top left"])
    assert not H.matches("The star is redder", ["red"])


def test_perfect_trace_scores_full():
    meta = _meta()
    res = H.score_record(meta, _trace(meta, PERFECT))
    assert res.answer["count"].rate == 1.0
    assert res.revision["count"].rate == 1.0
    assert res.watch.rate == 1.0 and res.watch_timing.rate == 1.0
    assert res.false_speech.ok == 0 and res.false_speech.n == 9
    # the record's own expected speech scores the same
    oracle = H.score_record(meta, H.oracle_trace(meta))
    assert oracle.to_dict()["answer_all"]["rate"] == 1.0 and oracle.false_speech.ok == 0
    md = res.markdown()
    assert "| count | 100.0% (1/1) | 100.0% (1/1) |" in md
    json.loads(res.to_json())


def test_speech_on_silent_frames_raises_false_speech():
    meta = _meta()
    res = H.score_record(meta, _trace(meta, PERFECT + [(0, 0, "Hello."), (1, 4, "Still two.")]))
    assert res.false_speech.ok == 2 and res.false_speech.rate == pytest.approx(2 / 9)
    assert res.answer["count"].rate == 1.0  # the first speech under the question is still right


def test_late_or_early_watch_fails_timeliness():
    meta = _meta()
    late = [s for s in PERFECT if s[0] != 2] + [(2, 11, "A red circle appeared.")]
    assert H.score_record(meta, _trace(meta, late)).watch.rate == 0.0
    early = [s for s in PERFECT if s[0] != 2] + [(2, 8, "A red circle appeared."), (2, 9, "A red circle.")]
    assert H.score_record(meta, _trace(meta, early)).watch.rate == 0.0
    wrong = [s for s in PERFECT if s[0] != 2] + [(2, 9, "A red square appeared.")]
    r = H.score_record(meta, _trace(meta, wrong))
    assert r.watch.rate == 0.0 and r.watch_timing.rate == 1.0
    # a watch that never comes must stay silent
    never = copy.deepcopy(meta)
    never["questions"][1]["info"]["comes"] = False
    never["questions"][1]["speech"] = []
    assert H.score_record(never, _trace(never, PERFECT)).watch_never.rate == 0.0
    assert H.score_record(never, _trace(never, PERFECT[:2])).watch_never.rate == 1.0


def test_missing_or_late_revision_lowers_recall():
    meta = _meta()
    missing = [s for s in PERFECT if s[1] != 6]
    assert H.score_record(meta, _trace(meta, missing)).revision["count"].rate == 0.0
    late = [s if s[1] != 6 else (1, 9, s[2]) for s in PERFECT]
    assert H.score_record(meta, _trace(meta, late)).revision["count"].rate == 0.0
    in_window = [s if s[1] != 6 else (1, 8, s[2]) for s in PERFECT]
    assert H.score_record(meta, _trace(meta, in_window)).revision["count"].rate == 1.0


def test_wrong_or_late_answer_fails_accuracy():
    meta = _meta()
    wrong = [(1, 3, "There are 3 objects.")] + PERFECT[1:]
    assert H.score_record(meta, _trace(meta, wrong)).answer["count"].rate == 0.0
    late = [(1, 5, "There are 2 objects.")] + PERFECT[1:]
    assert H.score_record(meta, _trace(meta, late)).answer["count"].rate == 0.0


def test_results_merge_and_offline_scoring():
    a, b = H.Results(), H.Results()
    a.answer["count"] = H.Tally(2, 1)
    b.answer["count"] = H.Tally(3, 3)
    b.offline["order"] = H.Tally(1, 1)
    a.merge(b)
    assert (a.answer["count"].n, a.answer["count"].ok) == (5, 4) and a.offline["order"].ok == 1
    back = H.Results.from_dict(dataclasses.asdict(a))
    assert back.to_dict() == a.to_dict()
    q = {"kind": "count_total", "value": 4, "answer": "4 different objects appear."}
    assert H.score_offline_answer(q, "4 different objects appear. 5 different")
    assert not H.score_offline_answer(q, "5 different objects appear. 4 objects")  # first sentence only
    ql = {"kind": "final_list", "value": ["small red circle", "large blue star"], "answer": ""}
    assert H.score_offline_answer(ql, "At the end I see a small red circle and a large blue star.")


# ---- end to end with a tiny random model -----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    from engine.bundled import random_checkpoint

    return random_checkpoint()


@pytest.fixture(scope="module")
def records():
    return H.synthetic_records([1000, 1001], "realtime")


def _oracle_hook(dec, meta):
    """Scripted decoder: speaks each expected speech where the record speaks it, silence otherwise."""
    script: dict[tuple[int, int], str] = {}
    for q in meta["questions"]:
        for s in q["speech"]:
            if s["spoken_frame"] is not None:
                key = (s["spoken_frame"], int(q["qid"]) + 1)
                script[key] = (script.get(key, "") + " " + s["text"]).strip()
    queue: list[int] = []
    done: set = set()

    def sample() -> int:
        key = (dec.frames_seen - 1, dec.turn)
        if not queue and not dec.speaking and key in script and key not in done:
            done.add(key)
            queue.extend(dec.tok.encode(script[key]))
        return queue.pop(0) if queue else dec.tok.silence_id

    dec._sample = sample


def test_replay_random_model_structure(tiny, records):
    res = H.Results()
    for rec in records:
        tr = H.replay(tiny, rec, max_segment_tokens=8, tokens_per_frame=20)
        assert tr.n_frames == rec["meta"]["n_frames"] == len(tr.text) == len(tr.spoke)
        assert set(tr.turn_of) == {q["qid"] for q in rec["meta"]["questions"]}
        assert all(0 <= s.start_frame < tr.n_frames for s in tr.segments)
        H.score_record(rec["meta"], tr, res)
    d = res.to_dict()
    assert d["records"] == 2 and d["false_speech"]["n"] == sum(
        len(r["meta"]["silent_frames"]) for r in records
    )
    assert "false-speech rate" in res.markdown()


def test_replay_oracle_decoder_scores_full(tiny, records):
    res, ref = H.Results(), H.Results()
    for rec in records:
        tr = H.replay(tiny, rec, max_segment_tokens=500, decoder_hook=_oracle_hook)
        H.score_record(rec["meta"], tr, res)
        H.score_record(rec["meta"], H.oracle_trace(rec["meta"]), ref)
    d = res.to_dict()
    assert d["answer_all"]["n"] > 0 and d["answer_all"]["rate"] == 1.0
    assert d["revision_all"]["n"] == 0 or d["revision_all"]["rate"] == 1.0
    assert d["false_speech"]["ok"] == 0
    assert d["answer_all"] == ref.to_dict()["answer_all"]


def test_offline_answer_runs(tiny, records):
    rec = records[0]
    frames = H.frames_of(rec, tiny.cfg.vision.image_size)[:5]
    k, v = perceive_images(tiny.model, frames)
    text = H.offline_answer(tiny, k, v, "How many objects are there?", max_new_tokens=6)
    assert isinstance(text, str)


# ---- benchmarks --------------------------------------------------------------------------------------


def test_ovo_bench_reader():
    qs = B.read_ovo_bench(FIXTURES / "ovo_bench_sample.json")
    assert len(qs) == 2 + 2 + 2 + 2
    epm = qs[0]
    assert (epm.task, epm.time_s, epm.answer, epm.options[1]) == ("EPM", 95.5, "B", "A screwdriver")
    assert qs[1].answer == "C" and qs[1].time_s == 12.0
    rec = [q for q in qs if q.task == "REC"]
    assert [q.answer for q in rec] == ["0", "2"] and rec[1].options == () and rec[1].time_s == 31.0
    ssr = [q for q in qs if q.task == "SSR"]
    assert [q.answer for q in ssr] == ["B", "A"] and ssr[0].options == ("Yes", "No")
    assert [q.answer for q in qs if q.task == "CRR"] == ["B", "A"]


def test_streamingbench_reader():
    qs = B.read_streamingbench(FIXTURES / "streamingbench_sample.json")
    assert len(qs) == 3
    assert (qs[0].video, qs[0].time_s, qs[0].answer, qs[0].options[2]) == (
        "real/sample_1.mp4",
        65.0,
        "C",
        "Orange",
    )
    assert qs[1].time_s == 130.0 and qs[1].answer == "D" and qs[1].task == "Counting"
    assert qs[2].answer == "B"  # given as the option text
    assert "A. Red" in qs[0].prompt() and qs[0].prompt().endswith("letter.")


def test_letter_scoring():
    opts = ("Red", "White", "Orange", "Blue")
    assert B.chosen_letter("C", opts) == "C"
    assert B.chosen_letter("The answer is (B).", opts) == "B"
    assert B.chosen_letter("Answer: D. Blue", opts) == "D"
    assert B.chosen_letter("It is orange.", opts) == "C"
    assert B.chosen_letter("I cannot tell.", opts) is None
    q = B.TimedQuestion("v.mp4", 1.0, "How many?", (), "2", "REC")
    assert B.is_correct(q, "They did it two times.") and not B.is_correct(q, "3 times")


def test_evaluate_with_fake_answers():
    qs = B.read_ovo_bench(FIXTURES / "ovo_bench_sample.json") + B.read_streamingbench(
        FIXTURES / "streamingbench_sample.json"
    )

    def oracle(q):
        return f"{q.answer}." if q.options else f"{q.answer} times"

    res = B.evaluate(qs, oracle)
    assert res.accuracy == 1.0 and sum(n for n, _ in res.per_task.values()) == len(qs)
    bad = B.evaluate(qs, lambda q: "I do not know.")
    assert bad.accuracy == 0.0
    assert "| **all** |" in res.markdown()


def _write_video(path: Path, n: int = 6, fps: float = 2.0, size=(48, 32)) -> None:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert w.isOpened()
    for i in range(n):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        img[:, : (i + 1) * 6] = (0, 0, 255)
        w.write(img)
    w.release()


def test_run_benchmark_tiny_video(tiny, tmp_path):
    _write_video(tmp_path / "clip.mp4")
    qs = [
        B.TimedQuestion(
            "clip.mp4", 2.0, "What colour is it?", ("Red", "Blue"), "A", "Object Perception", "q0"
        ),
        B.TimedQuestion("clip.mp4", 1.0, "How many?", (), "1", "REC", "q1"),
    ]
    seen = []

    def fake(frames, prompt):
        seen.append(len(frames))
        assert frames[0].shape[2] == 3
        return "A" if "Red" in prompt else "1"

    res = B.run_benchmark(tiny, qs, tmp_path, answer_fn=fake)
    assert res.accuracy == 1.0 and seen == [3, 2]  # 1 fps up to time_s inclusive
    real = B.run_benchmark(tiny, qs, tmp_path)  # the random model through the real decoder
    assert sum(n for n, _ in real.per_task.values()) == 2 and len(real.replies) == 2


def test_replay_wall_through_the_real_runtime(records):
    """The same record through Session (three threads, wall clock at 8x): every question reaches the
    model on its frame, the trace covers the video, and the scorer takes it like a simulated one."""
    from engine.bundled import load_default_checkpoint

    model = load_default_checkpoint()
    rec = records[0]
    tr = H.replay_wall(model, rec, model.system_prompt or H.P.REALTIME_SYSTEM_PROMPT, speed=8.0)
    meta = rec["meta"]
    assert tr.n_frames == meta["n_frames"] == len(tr.text)
    assert set(tr.turn_of) == {q["qid"] for q in meta["questions"]}
    assert sorted(tr.turn_of.values()) == list(range(1, len(meta["questions"]) + 1))
    assert all(0 <= s.start_frame < tr.n_frames for s in tr.segments)
    res = H.Results()
    H.score_record(meta, tr, res)
    assert res.to_dict()["false_speech"]["n"] == len(meta["silent_frames"])


def _replay_cpu_steps(seeds, weights):
    """Held-out streams replayed through Model.forward_text in float32 and through the CPU decode
    step with `weights` -> (texts, logits) of each."""
    from engine.bundled import load_default_checkpoint
    from engine.cpustep import CpuDecodeStep

    model = load_default_checkpoint()
    sp = model.system_prompt or H.P.REALTIME_SYSTEM_PROMPT

    def recording(into: list, weights):
        def hook(dec, meta):
            assert isinstance(dec.cpu_step, CpuDecodeStep)  # on by default for a float32 CPU model
            dec.cpu_step = weights and CpuDecodeStep(model.model, dec.cache.max_len, weights)
            fwd = dec._forward
            dec._forward = lambda chunk, start: into.append(fwd(chunk, start)) or into[-1]

        return hook

    out = []
    for rec in H.synthetic_records(seeds, "realtime", sp):
        ref, got = [], []
        f32 = H.replay(model, rec, sp, decoder_hook=recording(ref, None))
        step = H.replay(model, rec, sp, decoder_hook=recording(got, weights))
        out.append((f32, step, ref, got))
    return out


def test_cpu_decode_step_says_what_the_float32_model_says():
    """The CPU runtime decodes short chunks through engine.cpustep (weights folded with the norms, few
    operator calls). With float16 weights the shipped model must say exactly what Model.forward_text
    in float32 says on held-out streams, with logits close at every step."""
    spoken = 0
    for f32, step, ref, got in _replay_cpu_steps(range(1002, 1008), "float16"):
        assert step.text == f32.text
        assert len(got) == len(ref)
        for a, b in zip(ref, got, strict=True):
            assert (a - b).abs().max() < 0.05 * a.abs().max()
        spoken += sum(f32.spoke)
    assert spoken > 0  # the model said something to compare


def test_cpu_int8_decode_step_says_almost_what_the_float32_model_says():
    """int8 weights (the default where bfloat16 is native: ~2-3x faster products): the same text on
    almost every frame of held-out streams, and the same next token at almost every step where both
    decoded the same stream."""
    same = total = agree = steps = 0
    for f32, step, ref, got in _replay_cpu_steps(range(1002, 1008), "int8"):
        same += sum(x == y for x, y in zip(f32.text, step.text, strict=True))
        total += len(f32.text)
        for a, b in zip(ref, got, strict=False):
            agree += int(a.argmax() == b.argmax())
            steps += 1
    assert total and same >= 0.95 * total, (same, total)
    assert steps and agree >= 0.95 * steps, (agree, steps)


def test_int8_weight_only_model_still_answers():
    """load_model(quantize="int8") (weight-only, engine.quant): every text projection holds int8 rows
    and no float weight, and the shipped model says on held-out streams what it says in float32,
    frame for frame, almost everywhere (int8 rounding may flip a rare near-tie)."""
    import torch

    from engine.bundled import MODEL_DIR
    from engine.decoder import Linear
    from engine.loading import load_checkpoint

    f32 = load_checkpoint(MODEL_DIR)
    q8 = load_checkpoint(MODEL_DIR, quantize="int8")
    assert q8.quantized == "int8" and f32.quantized is None
    lins = [m for m in q8.model.modules() if isinstance(m, Linear)]
    assert lins and all(m.weight is None and m.qweight.dtype == torch.int8 for m in lins)
    assert sum(m.qweight.numel() for m in lins) > 0.9 * sum(
        p.numel()
        for n, p in f32.model.named_parameters()
        if n.startswith(("language_model.layers", "lm_head"))
    )
    same, total = H.frame_agreement(f32, q8, range(1002, 1006))
    assert same >= 0.9 * total, (same, total)


def test_eval_cli_on_frames_of_a_larger_video(tmp_path, records):
    """`python -m engine.eval --render-scale 5`: the held-out streams as a 320 px video file would
    reach the 64 px model (rendered larger, area-downsampled); the results say which frames they used."""
    from engine.eval.__main__ import main

    frames = H.frames_of(records[0], 64, 5.0)
    assert frames.shape == H.frames_of(records[0], 64).shape
    assert not np.array_equal(frames, H.frames_of(records[0], 64))
    out = tmp_path / "r.json"
    assert (
        main(["--model", "assets/model", "--seeds", "1000-1001", "--render-scale", "5", "--json", str(out)])
        == 0
    )
    d = json.loads(out.read_text())
    assert d["render_scale"] == 5.0 and d["frames"] > 0 and d["answer_all"]["n"] > 0


def test_external_suite_without_its_data_says_where_it_comes_from(tmp_path, capsys, monkeypatch):
    from engine.eval.__main__ import main as eval_main

    monkeypatch.delenv("MOSS_EVAL_ANNOTATIONS", raising=False)
    monkeypatch.delenv("MOSS_EVAL_VIDEO_ROOT", raising=False)
    assert eval_main(["--model", "assets/model", "--suite", "ovo"]) == 2
    err = capsys.readouterr().err
    assert "--annotations" in err and "OVO-Bench" in err and "not part of this project" in err
    missing = tmp_path / "nope.json"
    assert eval_main(["--model", "x", "--suite", "streamingbench", "--annotations", str(missing),
                      "--video-root", str(tmp_path)]) == 2  # fmt: skip
    assert f"{missing} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("seeds", ["10000-10002", "20000", "999", "1000,123456"])
def test_evaluation_refuses_seeds_training_can_draw(seeds, capsys):
    from engine.eval.__main__ import main as eval_main

    assert eval_main(["--model", "assets/model", "--seeds", seeds]) == 2
    assert "the range training never draws from" in capsys.readouterr().err


def test_the_training_generator_never_produces_a_held_out_seed():
    from engine.train import small

    with pytest.raises(ValueError, match="held-out"):
        small.synthetic_record(small.HELD_OUT.stop - 1, "realtime")
    for world in (1, 2, 8):
        for rank in range(world):
            assert small.seed_for(0, rank, world) >= small.TRAIN_SEED_BASE == small.HELD_OUT.stop


def test_repetition_metrics_count_lines_runs_and_loops():
    from engine.eval.long import Repetition

    r = Repetition()
    r.add(
        [
            "There are 3 objects.",
            "There are 3 objects.",
            "There are three objects",
            "large large large large",
        ],
        2.0,
    )
    d = r.to_dict()
    assert d["lines"] == 4 and d["lines_per_minute"] == 2.0
    assert d["longest_same_run"] == 3  # normalised: "three" == "3"
    assert d["looping_segments"] == 1 and r.distinct(1) < 0.6


def test_long_and_unfamiliar_video_splits_run_and_stay_held_out(tiny):
    from engine.eval.long import OOD_KINDS, evaluate_long, evaluate_ood, ood_frames

    with pytest.raises(AssertionError, match="not held out"):
        ood_frames("screen", 20000, 2)
    a, b = ood_frames("screen", 5000, 3, 64), ood_frames("screen", 5000, 3, 64)
    assert a.shape == (3, 64, 64, 3) and np.array_equal(a, b)  # deterministic
    assert {k: ood_frames(k, 5001, 1, 32).std() > 5 for k in OOD_KINDS} == dict.fromkeys(OOD_KINDS, True)
    r = evaluate_long(tiny, [5000], 70, "watch", memory_frames=16, tokens_per_frame=3)
    assert sum(n for n, _ in r.by_minute.values()) >= 1 and r.talk.minutes == pytest.approx(70 / 60)
    out = evaluate_ood(tiny, [5000], 4, "watch", tokens_per_frame=3)
    assert set(out) == set(OOD_KINDS) and all(v.minutes > 0 for v in out.values())


@pytest.mark.parametrize("suite", ["long", "ood"])
def test_the_long_and_unfamiliar_splits_refuse_seeds_training_can_draw(suite, capsys):
    from engine.eval.__main__ import main as eval_main

    assert eval_main(["--model", "assets/model", "--suite", suite, "--seeds", "10000"]) == 2
    assert "the range training never draws from" in capsys.readouterr().err


def test_the_bundled_model_still_answers_right_after_ten_minutes():
    """Twenty minutes of a held-out world stream, a count or display question every minute: with the
    stream compacted under the positions the model was trained on (its trained_context), answers from
    minute 10 on stay right (95% on four streams in the README; 15% when the context may grow to 4096)."""
    from engine.bundled import load_default_checkpoint
    from engine.eval.long import evaluate_long

    ckpt = load_default_checkpoint()
    sp = ckpt.system_prompt
    capped = evaluate_long(ckpt, [5000, 5001], 1200, sp, memory_frames=64)
    ok, n = capped.accuracy(10)
    assert n == 20 and ok >= 16, (ok, n)
    assert capped.compactions > 20 and capped.talk.longest_same_run <= 3
    grown = evaluate_long(
        ckpt.replace(generation={**ckpt.generation, "trained_context": None}), [5000], 1200, sp
    )
    late_ok, late_n = grown.accuracy(10)
    assert late_ok <= late_n // 2, (late_ok, late_n)  # the cause: positions past the trained ones

"""The bundled model outside its world (engine.novelty): real and unfamiliar video is recognised as
such, the model stays quiet there and answers a question plainly, and its own world is never flagged."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from engine import events as E
from engine.bundled import load_default_checkpoint, random_checkpoint
from engine.eval.harness import frames_of, synthetic_records
from engine.eval.long import ood_frames
from engine.generation import StreamConfig, StreamDecoder
from engine.novelty import FILE, WorldCheck
from engine.options import SessionConfig
from engine.perception import perceive_images
from engine.session import Session
from engine.sources import SyntheticSource
from tests.paths import MOSS_DEMO

REAL_VIDEOS = sorted(MOSS_DEMO.rglob("*.mp4"))


@pytest.fixture(scope="module")
def bundled():
    ckpt = load_default_checkpoint()
    assert ckpt.world_check is not None and ckpt.out_of_world_answer
    return ckpt


def video_frames(path, n=30):
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < n:
        ok, f = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(out)


def familiar(ckpt, frames):
    return ckpt.world_check.familiar(perceive_images(ckpt.model, frames, features=True)[2])


@pytest.mark.parametrize("scale", [1.0, 5.0])
def test_the_model_s_own_world_is_never_flagged(bundled, scale):
    """Held-out world streams (never trained on, not used to fit the check), at the model's size and
    as frames of a larger video reach it."""
    for rec in synthetic_records(range(1190, 1196), "realtime", bundled.system_prompt):
        assert all(familiar(bundled, frames_of(rec, bundled.cfg.vision.image_size, scale)))


def test_real_camera_video_and_a_screen_of_text_are_outside_the_world(bundled):
    assert REAL_VIDEOS
    for path in REAL_VIDEOS:
        flags = familiar(bundled, video_frames(path))
        assert sum(flags) <= 0.1 * len(flags), (path.name, flags)
    assert not any(familiar(bundled, ood_frames("screen", 5000, 20)))


def test_a_real_video_gets_a_plain_answer_and_no_unasked_talk(bundled):
    """Through the runtime: the session says once that the video is unlike the model's world, the
    model says nothing unasked, and a question gets the checkpoint's own sentence."""
    s = Session(bundled, SessionConfig(realtime=False, transcript_dir=None))
    s.ask("What do you see?", at=3.0)
    s.start(str(REAL_VIDEOS[0]))
    evs = list(s.events(timeout=120))
    notes = [e for e in evs if isinstance(e, E.Unfamiliar)]
    assert len(notes) == 1 and notes[0].outside and notes[0].frame == 0
    answers = [e for e in evs if isinstance(e, E.SpeechEnd)]
    assert [a.text for a in answers] == [bundled.out_of_world_answer]
    assert answers[0].turn == 1  # the answer to the question, nothing before it


def test_the_demo_world_video_is_not_flagged(bundled):
    s = Session(bundled, SessionConfig(realtime=False))
    s.ask("How many objects are there?", at=2.0)
    s.start("demo")
    evs = list(s.events(timeout=180))
    assert not [e for e in evs if isinstance(e, E.Unfamiliar)]
    assert any(isinstance(e, E.SpeechEnd) and "object" in e.text for e in evs)


def test_the_judgement_needs_two_frames_in_a_row_after_the_first():
    ckpt = random_checkpoint()
    m = ckpt.model
    dec = StreamDecoder(
        m, ckpt.tokenizer, StreamConfig(system_prompt="watch", out_of_world_answer="I cannot tell.")
    )
    S = m.cfg.vision.image_size
    k, v = perceive_images(m, np.zeros((1, S, S, 3), np.uint8))
    seen = []
    for flag in [True, False, True, False, False, False, True, True]:
        seen += [e for e in dec.add_frame(k[0], v[0], familiar=flag) if isinstance(e, E.Unfamiliar)]
    assert [(e.frame, e.outside) for e in seen] == [(4, True), (7, False)]
    first = StreamDecoder(m, ckpt.tokenizer, StreamConfig(system_prompt="w", out_of_world_answer="x"))
    evs = first.add_frame(k[0], v[0], familiar=False)
    assert [e.outside for e in evs if isinstance(e, E.Unfamiliar)] == [True]  # the first frame decides


def test_outside_the_world_the_model_never_speaks_unasked():
    """Even a model that would talk at every frame (its sampler forced to speak) stays silent outside
    its world, and says the checkpoint's sentence once when asked."""
    ckpt = random_checkpoint()
    m, tok = ckpt.model, ckpt.tokenizer
    dec = StreamDecoder(m, tok, StreamConfig(system_prompt="watch", out_of_world_answer="I cannot tell."))
    word = tok.encode(" red")[0]
    dec._sample = lambda: word  # a chatty model
    S = m.cfg.vision.image_size
    k, v = perceive_images(m, np.zeros((1, S, S, 3), np.uint8))
    evs = []
    for i in range(6):
        evs += dec.add_frame(k[0], v[0], familiar=False)
        evs += dec.step()
        if i == 2:
            evs += dec.ask("what is it?")
            evs += dec.step()
    spoken = [e.text for e in evs if isinstance(e, E.SpeechEnd)]
    assert spoken == ["I cannot tell."]
    evs = dec.add_frame(k[0], v[0], familiar=True) + dec.add_frame(k[0], v[0], familiar=True) + dec.step()
    assert any(isinstance(e, E.Token) for e in evs)  # back in its world: it talks again


def test_the_check_travels_with_the_checkpoint_and_a_damaged_one_is_named(tmp_path, bundled):
    from engine.loading import LoadError, load_checkpoint, save_checkpoint

    folder = save_checkpoint(bundled, tmp_path / "copy")
    again = load_checkpoint(folder)
    assert again.world_check.threshold == bundled.world_check.threshold
    assert torch.equal(again.world_check.mean, bundled.world_check.mean)
    (folder / FILE).write_bytes(b"not safetensors")
    with pytest.raises(LoadError, match=FILE):
        load_checkpoint(folder)
    (folder / FILE).unlink()
    (folder / FILE).mkdir()  # not a file: refused in one sentence, never read
    with pytest.raises(LoadError, match=FILE):
        load_checkpoint(folder)


def test_a_checkpoint_without_a_check_runs_as_before(bundled):
    """Real checkpoints know the world: no check, no guard, familiarity ignored."""
    plain = bundled.replace(world_check=None)
    assert plain.out_of_world_answer is None
    s = Session(plain, SessionConfig(realtime=False))
    s.start(SyntheticSource(list(ood_frames("screen", 5001, 6)), fps=1.0, realtime=False))
    assert not [e for e in s.events(timeout=60) if isinstance(e, E.Unfamiliar)]


def test_the_check_is_fitted_on_streams_never_trained_on_and_apart_from_the_evaluation():
    from engine.eval.novelty import CHECK_SEEDS, FIT_SEEDS
    from engine.train.small import HELD_OUT

    used = set(FIT_SEEDS) | set(CHECK_SEEDS)
    assert used <= set(HELD_OUT) and not used & set(range(1000, 1200))
    assert WorldCheck.load(tmp_missing := MOSS_DEMO / "no-such-folder") is None and not tmp_missing.exists()

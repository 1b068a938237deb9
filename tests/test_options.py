"""One configuration chain: the command line and the app's settings build the same SessionConfig,
checked against one table (engine.options), and every decode option reaches the decoder."""

from __future__ import annotations

import pytest

from engine.bundled import random_checkpoint
from engine.options import LIMITS, SessionConfig, out_of_range
from engine.session import Session


@pytest.fixture(scope="module")
def ckpt():
    return random_checkpoint()


@pytest.mark.parametrize(
    "step, static, cpu",
    [("auto", False, True), ("eager", False, False), ("cpu", False, True), ("static", True, False)],
)
def test_the_decode_step_chosen_in_the_options_is_the_one_the_decoder_runs(ckpt, step, static, cpu):
    s = Session(ckpt, SessionConfig(decode_step=step, cpu_weights="float16", realtime=False))
    s.start("synthetic:2")
    try:
        dec = s.decoder
        assert (dec.graph is not None) == static
        assert (dec.cpu_step is not None) == cpu
        if cpu:
            assert dec.cpu_step.weights == "float16"
    finally:
        s.stop()


@pytest.mark.parametrize(
    "change, words",
    [
        ({"fps": 0}, "frame rate"),
        ({"memory_frames": 10**9}, "visual memory"),
        ({"max_context": 10}, "text context"),
        ({"top_p": 0.0}, "top-p"),
        ({"temperature": float("nan")}, "temperature"),
        ({"seed": -1}, "seed"),
        ({"decode_step": "turbo"}, "decode step"),
    ],
)
def test_an_option_out_of_range_is_one_sentence_before_anything_runs(ckpt, change, words):
    with pytest.raises(ValueError, match=f"(?i){words}") as e:
        Session(ckpt, SessionConfig(**change))
    assert str(e.value).count(". ") == 0 and str(e.value).endswith(".")


def test_the_command_line_and_the_settings_read_the_engine_table():
    """A range changed in engine.options changes what main.py and the settings file accept."""
    import main
    from app.settings import CHECKS

    p = main.build_parser()
    lo, hi, _, _ = LIMITS["memory_frames"]
    assert p.parse_args(["--memory-frames", str(hi)]).memory_frames == hi
    with pytest.raises(SystemExit):
        p.parse_args(["--memory-frames", str(hi + 1)])
    assert CHECKS["memory_frames"](hi) == hi
    with pytest.raises(ValueError):
        CHECKS["memory_frames"](hi + 1)
    assert out_of_range("memory_frames", hi) is None and out_of_range("memory_frames", hi + 1)


def test_the_app_settings_reach_the_session_config(tmp_path):
    from app.backend import session_config
    from app.settings import Settings

    cfg = session_config(
        Settings(decode_step="eager", cpu_weights="int8", fps=2.0, temperature=0.7), tmp_path
    )
    assert (cfg.decode_step, cfg.cpu_weights, cfg.fps, cfg.temperature) == ("eager", "int8", 2.0, 0.7)
    assert cfg.transcript_dir == tmp_path and cfg.check() is cfg


def test_a_checkpoint_s_trained_context_caps_the_session_s(ckpt):
    """The bundled model learnt positions up to ~400 tokens: a live stream is compacted under its
    generation.json `trained_context` whatever the session allows; other checkpoints keep the session's."""
    from engine.bundled import load_default_checkpoint

    bundled = load_default_checkpoint()
    assert bundled.trained_context == 384 and ckpt.trained_context is None
    for c, want in ((bundled, 384), (ckpt, 4096)):
        s = Session(c, SessionConfig(max_context=4096, realtime=False))
        s.start("synthetic:1")
        try:
            assert s.decoder.cfg.max_context == want
        finally:
            s.stop()

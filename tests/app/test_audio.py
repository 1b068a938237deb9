"""Voice: the callback hand-off, voice activity, utterance cutting, and speech reaching the session."""

from __future__ import annotations

import shutil
import wave

import numpy as np
import pytest

from app.audio import (
    FRAME,
    RATE,
    AudioRing,
    EnergyVAD,
    Resampler,
    Segmenter,
    VoiceLoop,
    VoiceUnavailable,
    check_voice,
    make_vad,
)


def tone(seconds: float, rate: int = RATE, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def quiet(seconds: float, rate: int = RATE) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(int(seconds * rate)) * 1e-3).astype(np.float32)


def feed(ring: AudioRing, audio: np.ndarray, block: int = 512) -> None:
    """Through the exact callback sounddevice calls, in (frames, channels) blocks."""
    for i in range(0, len(audio), block):
        chunk = audio[i : i + block].reshape(-1, 1)
        ring.callback(chunk, len(chunk), None, None)


class Recorder:
    name = "recorder"

    def __init__(self):
        self.utterances = []

    def transcribe(self, audio):
        self.utterances.append(audio)
        return f"utterance {len(self.utterances)}"


def test_ring_callback_copies_and_never_blocks():
    ring = AudioRing(max_blocks=4)
    buf = np.ones((256, 1), np.float32)
    ring.callback(buf, 256, None, None)
    buf[:] = 0  # PortAudio reuses its buffer: what we kept must not change
    for _ in range(5):
        ring.callback(buf, 256, None, None)  # over capacity: the oldest block goes, nothing waits
    blocks = ring.pop_all()
    assert len(blocks) == 4 and ring.lost == 2
    ring.callback(np.full((10, 1), 16384, np.int16), 10, None, None)
    assert abs(ring.pop_all()[0][0] - 0.5) < 1e-6


def test_resampler_streams_44k1_to_16k():
    r = Resampler(44100)
    x = tone(1.0, rate=44100, freq=300.0)
    out = np.concatenate([r(x[i : i + 1000]) for i in range(0, len(x), 1000)])
    assert abs(len(out) - RATE) <= 2
    ref = tone(1.0, rate=RATE, freq=300.0)[: len(out)]
    assert np.max(np.abs(out[10:-10] - ref[10:-10])) < 0.02


def test_energy_vad_and_segmenter_cut_one_utterance():
    vad, seg = EnergyVAD(), Segmenter()
    audio = np.concatenate([quiet(1.0), tone(0.8), quiet(1.0)])
    starts, utterances = 0, []
    for i in range(0, len(audio) - FRAME + 1, FRAME):
        frame = audio[i : i + FRAME]
        started, utt = seg.push(frame, vad.is_speech(frame))
        starts += started
        if utt is not None:
            utterances.append(utt)
    assert starts == 1 and len(utterances) == 1
    assert 0.8 <= len(utterances[0]) / RATE <= 1.9  # the speech, 0.39 s pre-roll, 0.6 s hangover


def test_voice_loop_always_listening_barges_in_and_recognises():
    ring, rec = AudioRing(rate=48000), Recorder()
    said, started = [], []
    loop = VoiceLoop(
        ring,
        EnergyVAD(),
        rec,
        on_text=said.append,
        on_speech_start=lambda: started.append(1),
        always_listen=True,
    )
    feed(ring, np.concatenate([quiet(0.5, 48000), tone(0.6, 48000), quiet(1.0, 48000)]))
    loop.process_available()
    assert started == [1] and said == ["utterance 1"]


def test_push_to_talk_records_only_while_held():
    ring, rec = AudioRing(), Recorder()
    said = []
    loop = VoiceLoop(ring, EnergyVAD(), rec, on_text=said.append, always_listen=False)
    feed(ring, tone(0.5))
    loop.process_available()
    assert said == []  # not listening without the key
    loop.ptt_down()
    feed(ring, tone(0.7))
    loop.process_available()
    loop.ptt_up()
    loop.process_available()
    assert said == ["utterance 1"] and abs(len(rec.utterances[0]) / RATE - 0.7) < 0.05


def test_voice_thread_starts_and_stops():
    ring, rec = AudioRing(), Recorder()
    loop = VoiceLoop(ring, EnergyVAD(), rec, on_text=lambda t: None).start()
    loop.stop()
    assert not loop._thread.is_alive()


def test_check_voice_names_what_is_missing():
    st = check_voice()
    assert st.vad
    if st.microphone is None:
        assert any("microphone" in m.lower() or "portaudio" in m.lower() for m in st.missing)
    assert "VAD" in st.summary()


def test_window_without_microphone_still_works(make_window, qtbot):
    from app.settings import Settings

    w = make_window(settings=Settings(first_run_done=True, voice=True, recognizer="off"))
    qtbot.waitUntil(lambda: w.voice is not None, timeout=10000)  # voice starts in a worker
    assert any("switched off" in m for m in w.voice_missing)
    w.push_to_talk_down()
    w.push_to_talk_up()
    w.start_source("synthetic")
    qtbot.waitUntil(lambda: w.state == "running", timeout=5000)
    assert w.ask("still works?")


needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt install espeak-ng)"
)


@needs_espeak
@pytest.mark.parametrize("detector", ["best installed", "energy fallback"])
def test_spoken_question_reaches_the_session(make_window, qtbot, tmp_path, detector):
    """espeak-ng speaks a question into a WAV; it goes through the microphone callback, the detector and
    the recogniser, and the question reaches the session, which answers it."""
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (pip install pocketsphinx)")
    from app.audio import EspeakTTS, PocketSphinxRecognizer

    wav = EspeakTTS(rate_wpm=140).to_wav("how many people are there", tmp_path / "q.wav")
    with wave.open(str(wav)) as f:
        rate = f.getframerate()
        speech = np.frombuffer(f.readframes(f.getnframes()), np.int16)
    silence = np.zeros(int(0.8 * rate), np.int16)
    audio = np.concatenate([silence, speech, silence, silence])

    from app.settings import Settings

    w = make_window(settings=Settings(first_run_done=True, always_listen=True))
    w.start_source("synthetic")
    qtbot.waitUntil(lambda: w.state == "running", timeout=5000)
    ring = AudioRing(rate=rate)
    vad = make_vad() if detector == "best installed" else EnergyVAD()
    missing = w.start_voice(ring=ring, vad=vad, recognizer=PocketSphinxRecognizer())
    assert missing == []
    feed(ring, audio.reshape(-1, 1), block=int(rate * 0.02))  # 20 ms blocks, int16 like a real device
    qtbot.waitUntil(lambda: bool(w.session.asked), timeout=15000)
    question = w.session.asked[0]
    print(f"\nVAD {vad.name}; recognised: {question!r}")
    assert "people" in question.lower()
    qtbot.waitUntil(lambda: len(w.log.answers) >= 1, timeout=5000)
    w.chat.flush()
    assert "(spoken)" in w.chat.toPlainText()


@needs_espeak
def test_the_recogniser_in_its_own_process_hears_a_question(tmp_path):
    """pocketsphinx holds the GIL while it loads and decodes; in its own process the window is never
    frozen by it. Same words as in-process, and close() ends the process."""
    pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (pip install pocketsphinx)")
    from app.audio import RATE, EspeakTTS
    from app.recognizer_process import RecognizerProcess

    wav = EspeakTTS(rate_wpm=140).to_wav("how many people are there", tmp_path / "q.wav")
    with wave.open(str(wav)) as f:
        rate = f.getframerate()
        speech = np.frombuffer(f.readframes(f.getnframes()), np.int16).astype(np.float32) / 32768
    if rate != RATE:  # resample to the recogniser's rate
        speech = np.interp(np.arange(0, len(speech), rate / RATE), np.arange(len(speech)), speech)
    rec = RecognizerProcess()
    try:
        assert rec._proc.is_alive() and rec._proc.pid != __import__("os").getpid()
        assert "people" in rec.transcribe(speech).lower()
    finally:
        rec.close()
    assert not rec._proc.is_alive()
    with pytest.raises(VoiceUnavailable, match="switched off"):
        RecognizerProcess("off")

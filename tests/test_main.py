"""The headless command: real videos run end to end; a broken file gives one line and a non-zero exit."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import MOSS_DEMO

ROOT = Path(__file__).resolve().parents[1]
DEMO = MOSS_DEMO
VIDEOS = [
    DEMO / "mllm_demo_data" / "1.mp4",
    DEMO / "mllm_demo_data" / "2.avi",
    DEMO / "mllm_realtime_data" / "v-5sRwJNR8U.mp4",
]


def run(*args, timeout=120):
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--headless", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "QT_QPA_PLATFORM": "offscreen"},
        cwd=ROOT,
    )


@pytest.mark.parametrize("video", VIDEOS, ids=lambda p: p.name)
def test_headless_on_real_videos(video, tmp_path):
    out = tmp_path / "t.jsonl"
    srt = tmp_path / "t.srt"
    r = run(
        "--source",
        str(video),
        "--fast",
        "--fps",
        "2",
        "--ask",
        "0=What do you see?",
        "--transcript",
        str(out),
        "--srt",
        str(srt),
    )
    assert r.returncode == 0, r.stderr
    assert "you: What do you see?" in r.stdout
    kinds = [json.loads(line)["kind"] for line in out.read_text().splitlines()]
    assert kinds[0] == "SessionStart" and kinds[-1] == "SessionEnd"
    assert kinds.count("FrameSeen") >= 4
    assert srt.exists()


def test_headless_on_corrupt_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes((DEMO / "mllm_demo_data" / "1.mp4").read_bytes()[:3000])
    out = tmp_path / "t.jsonl"
    r = run("--source", str(bad), "--transcript", str(out))
    assert r.returncode != 0
    errors = [line for line in r.stdout.splitlines() if "error:" in line]
    assert len(errors) == 1 and "broken.mp4" in errors[0]
    kinds = [json.loads(line)["kind"] for line in out.read_text().splitlines()]
    assert "Error" in kinds and kinds[-1] == "SessionEnd"


def test_missing_model_folder_is_one_sentence(tmp_path):
    r = run("--model", str(tmp_path / "nope"), "--source", "synthetic")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr


def test_mode_and_decoding_are_the_users_and_recorded(tmp_path):
    out = tmp_path / "t.jsonl"
    r = run("--source", "synthetic", "--duration", "2", "--mode", "stock", "--decoding", "sample", "--seed", "5",
            "--transcript", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "stock mode, decoding: sampling (temperature 1, top-k 50, no repeated 4-grams, seed 5" in r.stdout
    start = json.loads(out.read_text().splitlines()[0])
    assert start["kind"] == "SessionStart" and start["mode"] == "stock"
    assert start["decoding"].startswith("sampling (temperature 1, top-k 50, no repeated 4-grams, seed 5")
    bad = run("--source", "synthetic", "--duration", "1", "--top-p", "0")
    assert bad.returncode == 2 and "top-p must be above 0" in bad.stderr and "Traceback" not in bad.stderr

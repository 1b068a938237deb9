"""Source choice, remembered screen regions, hardware report, one instance, background work."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from app.hardware import GPU, KNOWN_MODELS, Hardware, fits, report
from app.source_picker import clamp_saved_region, parse_region, spec_kind


@dataclass
class Mon:
    index: int
    width: int
    height: int
    primary: bool = False
    left: int = 0
    top: int = 0


def test_region_kept_cut_or_dropped_when_monitors_change():
    mons = [Mon(1, 1920, 1080, True), Mon(2, 1280, 1024, left=1920)]
    assert clamp_saved_region(2, (10, 10, 400, 300), mons) == (2, (10, 10, 400, 300), None)
    m, r, note = clamp_saved_region(3, (100, 100, 640, 480), mons)  # monitor 3 unplugged
    assert m == 1 and r == (100, 100, 640, 480) and "no longer connected" in note
    m, r, note = clamp_saved_region(2, (1000, 900, 600, 400), mons)  # hangs off the smaller monitor
    assert r == (1000, 900, 280, 124) and "cut to fit" in note
    m, r, note = clamp_saved_region(2, (3000, 3000, 10, 10), mons)
    assert r is None and "whole monitor" in note
    assert clamp_saved_region(5, (1, 2, 3, 4), []) == (5, (1, 2, 3, 4), None)  # no display: keep


def test_parse_region_and_spec_kind():
    assert parse_region("") is None
    assert parse_region("10, 20, 300, 200") == (10, 20, 300, 200)
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,10"):
        with pytest.raises(ValueError):
            parse_region(bad)
    assert [spec_kind(s) for s in ("demo", "webcam:1", "screen:2:0,0,5,5", "/x.mp4")] == [
        "demo",
        "webcam",
        "screen",
        "file",
    ]


def test_picker_specs_and_remembered_region(make_window, qtbot):
    w = make_window()
    p = w.picker
    p.set_monitors([Mon(1, 800, 600, True)])
    p.set_kind("screen")
    p.region_edit.setText("0,0,200,100")
    assert p.spec() == "screen:1:0,0,200,100"
    notes = []
    p.region_note.connect(notes.append)
    p.restore_screen(2, (700, 500, 300, 300))
    assert p.spec() == "screen:1:700,500,100,100" and notes
    p.set_cameras([0, 2])
    p.set_kind("webcam")
    p.camera_combo.setCurrentIndex(1)
    assert p.spec() == "webcam:2"
    p.set_kind("demo")
    assert p.spec() == "demo"


def test_screen_choice_is_saved_on_start(make_window, qtbot, paths):
    from app.settings import load_settings

    w = make_window()
    w.picker.set_monitors([Mon(1, 800, 600, True)])
    w.picker.set_kind("screen")
    w.picker.region_edit.setText("10,10,100,100")
    w.start()
    qtbot.waitUntil(lambda: w.state == "idle", timeout=5000)  # no display here: the source fails
    saved, _ = load_settings(paths.settings_file)
    assert saved.screen_region == (10, 10, 100, 100) and saved.last_source.startswith("screen:1")
    w.chat.flush()
    assert "screen" in w.chat.toPlainText().lower()


def test_capture_exclusion_is_honest(make_window):
    w = make_window()
    assert w.capture_note  # says whether this window is hidden from screen capture


def test_hardware_report_and_fits():
    cpu_only = Hardware(16.0, 8, (), False, "2.13", "")
    assert all(n.source == "bundled" or not fits(cpu_only, n)[0] for n in KNOWN_MODELS)
    assert fits(cpu_only, KNOWN_MODELS[0]) == (True, "runs on the CPU (always works)")
    h100 = Hardware(256.0, 32, (GPU("H100", 80.0),), False, "2.13", "")
    assert all(fits(h100, n)[0] for n in KNOWN_MODELS)
    text = report(cpu_only)
    assert "GPU: none found" in text and "always works" in text
    # the hints follow the measured peaks: 27.3 GB in bfloat16, 16.0 GB with int8 (256 frames)
    rtx4090 = Hardware(64.0, 16, (GPU("RTX 4090", 24.0),), False, "2.13", "")
    ok, why = fits(rtx4090, KNOWN_MODELS[1])
    assert ok and "int8" in why  # a 24 GB card needs int8: bfloat16 peaks above 24 GB
    ok, why = fits(Hardware(32.0, 8, (GPU("RTX 4060 Ti", 16.0),), False, "2.13", ""), KNOWN_MODELS[1])
    assert ok and "int8" in why
    ok, why = fits(Hardware(32.0, 8, (GPU("RTX 3060", 12.0),), False, "2.13", ""), KNOWN_MODELS[1])
    assert not ok and "16 GB of GPU memory with int8" in why


def test_first_run_probe_reports_in_the_chat(make_window, qtbot, paths):
    from app.settings import Settings, load_settings

    w = make_window(settings=Settings(first_run_done=False), probe_hardware=True)
    qtbot.waitUntil(lambda: "Hardware check" in w.chat.toPlainText(), timeout=60000)
    assert "RAM:" in w.chat.toPlainText()
    assert load_settings(paths.settings_file)[0].first_run_done


def test_one_instance_at_a_time(qtbot, tmp_path):
    from app.desktop import acquire_single_instance

    first = acquire_single_instance(tmp_path)
    assert first is not None
    assert acquire_single_instance(tmp_path) is None
    first.unlock()
    again = acquire_single_instance(tmp_path)
    assert again is not None
    again.unlock()


def test_task_results_arrive_in_the_gui_thread(qtbot):
    from app.workers import Task

    seen = {}

    def work(report):
        report(0.5, "half")
        seen["worker"] = threading.current_thread().name
        return 42

    t = Task("test-task", work)
    progress = []
    t.connect(
        lambda r: seen.update(result=r, thread=threading.current_thread()),
        None,
        lambda f, s: progress.append((f, s)),
    )
    t.start()
    qtbot.waitUntil(lambda: "result" in seen, timeout=3000)
    assert seen["result"] == 42 and seen["worker"] == "test-task"
    assert seen["thread"] is threading.main_thread() and progress == [(0.5, "half")]


def test_task_failure_message(qtbot):
    from app.backend import LoadFailed
    from app.workers import Task

    msgs = []

    def work(report):
        raise LoadFailed("The folder has no config.json.")

    task = Task("fail-task", work).connect(None, msgs.append).start()
    qtbot.waitUntil(lambda: bool(msgs), timeout=3000)
    assert task.finished
    assert msgs == ["The folder has no config.json."]


def test_download_progress_text():
    from app.backend import describe_progress

    frac, text = describe_progress(50 * 2**20, 200 * 2**20, 5.0)
    assert frac == 0.25 and "10.0 MB/s" in text and "ETA 0:15" in text
    assert describe_progress(3, None, 1.0, unit="it")[0] == -1.0

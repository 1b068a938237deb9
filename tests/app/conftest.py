"""Fixtures for the app tests: an isolated user folder, a window factory, Qt warnings as failures."""

from __future__ import annotations

from pathlib import Path

import pytest

APP_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    # STYLE: Qt warnings fail tests (pytest-qt turns captured Qt messages at this level into failures).
    for item in items:
        if Path(str(item.fspath)).is_relative_to(APP_TESTS):
            item.add_marker(pytest.mark.qt_log_level_fail("WARNING"))
            # The offscreen platform plugin says this for every top-level window; it is not our bug.
            item.add_marker(pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints"))


@pytest.fixture
def paths(tmp_path):
    from app.settings import AppPaths

    return AppPaths.under(tmp_path / "home").ensure()


@pytest.fixture
def make_window(qtbot, paths):
    from app.settings import Settings
    from app.window import MainWindow
    from tests.app.fakes import FakeBackend

    made = []

    def make(backend=None, settings=None, messages=(), wait_model=True, **kw):
        s = settings or Settings(first_run_done=True, last_source="demo")
        kw.setdefault("probe_hardware", False)
        w = MainWindow(s, paths, backend or FakeBackend(), messages, **kw)
        qtbot.addWidget(w)
        w.show()
        made.append(w)
        if wait_model and kw.get("autoload", True):
            qtbot.waitUntil(lambda: w.model is not None, timeout=10000)
        return w

    yield make
    for w in made:
        w.shutdown()

"""Settings: saved as readable YAML, read back equal, and bad files explained by line and field."""

from __future__ import annotations

from app.settings import AppPaths, Settings, load_settings, save_settings


def test_round_trip(tmp_path):
    path = tmp_path / "cfg" / "settings.yaml"
    s = Settings(
        model="org/name",
        device="cuda:1",
        fps=2.5,
        memory_frames=128,
        theme="dark",
        screen_region=(10, 20, 300, 200),
        voice=True,
    )
    save_settings(s, path)
    text = path.read_text()
    assert "fps: 2.5" in text and "model: org/name" in text
    back, messages = load_settings(path)
    assert messages == []
    assert back == s


def test_missing_file_gives_defaults_silently(tmp_path):
    s, messages = load_settings(tmp_path / "none.yaml")
    assert s == Settings() and messages == []


def test_malformed_yaml_names_line_and_field(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text("model: ''\nfps: 2.0\nsystem_prompt: [unclosed\ntheme: dark\n")
    s, messages = load_settings(path)
    assert s == Settings()
    assert len(messages) == 1
    m = messages[0]
    assert "not valid YAML" in m and "line " in m and "system_prompt" in m


def test_bad_values_fall_back_per_field_with_line(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text("theme: dark\nfps: fast\nmemory_frames: -3\ncolour: blue\ndevice: gpu\n")
    s, messages = load_settings(path)
    assert s.theme == "dark"  # the good field is kept
    assert s.fps == Settings().fps and s.memory_frames == Settings().memory_frames
    joined = "\n".join(messages)
    assert "line 2: 'fps' must be a number" in joined
    assert "line 3: 'memory_frames' must be between" in joined
    assert "line 4: unknown setting 'colour'" in joined
    assert "line 5: 'device' must be auto, cpu" in joined


def test_not_a_mapping(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text("- just\n- a list\n")
    s, messages = load_settings(path)
    assert s == Settings() and "name: value" in messages[0]


def test_window_shows_settings_problems_and_dialog_saves(make_window, qtbot, paths):
    path = paths.settings_file
    path.write_text("fps: [1,\n")
    s, messages = load_settings(path)
    w = make_window(settings=s.replace(first_run_done=True), messages=messages)
    w.chat.flush()
    assert "not valid YAML" in w.chat.toPlainText()
    assert "not valid YAML" in w.statusBar().currentMessage()
    dlg = w.open_settings()
    dlg.fps.setValue(3.0)
    dlg.theme.setCurrentText("dark")
    dlg.font_size.setValue(12)
    dlg.accept()
    assert w.settings.fps == 3.0 and w.settings.theme == "dark"
    back, problems = load_settings(path)
    assert problems == [] and back.fps == 3.0 and back.font_size == 12
    w.apply_settings(w.settings.replace(theme="system", font_size=10))


def test_dialog_rejects_invalid_device(make_window, qtbot):
    w = make_window()
    dlg = w.open_settings()
    dlg.device.setCurrentText("gpu0")
    dlg.accept()
    assert dlg.isVisible()
    assert "device" in dlg.message.text()
    dlg.reject()


def test_model_change_reloads(make_window, qtbot):
    w = make_window()
    assert w.backend.loads == 1
    w.apply_settings(w.settings.replace(model="/some/folder"))
    qtbot.waitUntil(lambda: w.backend.loads == 2 and w.model is not None, timeout=5000)


def test_platform_folders_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("MOSS_LIVE_HOME", str(tmp_path))
    p = AppPaths.from_platform()
    assert p.settings_file == tmp_path / "config" / "settings.yaml"
    monkeypatch.delenv("MOSS_LIVE_HOME")
    p = AppPaths.from_platform()
    assert "moss-live" in str(p.config) and p.sessions.name == "sessions"


def test_mode_and_decoding_from_the_dialog_reach_the_engine(make_window, qtbot, tmp_path, monkeypatch):
    """The settings a user picks are the ones the model is loaded and the session is run with."""
    w = make_window()
    dlg = w.open_settings()
    dlg.mode.setCurrentText("stock")
    dlg.decoding.setCurrentText("greedy")
    dlg.accept()
    assert w.settings.mode == "stock" and w.settings.decoding == "greedy"
    qtbot.waitUntil(lambda: w.backend.loads == 2, timeout=5000)  # a new mode reloads the model

    import engine.loading
    from app.backend import EngineBackend, LoadedModel
    from engine.bundled import MODEL_DIR

    seen = {}
    real = engine.loading.load_checkpoint

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)

    monkeypatch.setattr(engine.loading, "load_checkpoint", spy)
    s = w.settings.replace(model=str(MODEL_DIR), device="cpu")
    loaded = EngineBackend().load(s, lambda *a: None)
    assert seen["mode"] == "stock" and loaded.handle.cfg.video.mode == "stock"
    session = EngineBackend().new_session(LoadedModel(loaded.handle, "m", "cpu"), s, None)
    assert session.sampling.greedy and session.sampling.origin == "chosen: greedy"

"""Security: no network listener, no remote code, hub downloads only from the id given, and user
paths (transcript names, settings) that cannot leave the user's folders."""

import io
import os
import time
import tokenize
from pathlib import Path

import pytest

from engine import events as E
from engine.bundled import random_checkpoint
from engine.loading import LoadError, load_checkpoint, load_model, save_checkpoint
from engine.session import Session, SessionConfig
from engine.sources import SyntheticSource
from engine.transcript import TranscriptWriter, session_path

ROOT = Path(__file__).resolve().parents[2]


def listening_sockets() -> list[str]:
    """TCP sockets in LISTEN state owned by this process (from /proc: psutil is not a dependency)."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            mine.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            listening = cols[3] == "0A" if "tcp" in table else cols[3] == "07"  # LISTEN / bound UDP
            if listening and cols[9] in mine:
                found.append(f"{table} {cols[1]}")
    return found


def test_no_network_listener_while_a_session_runs(tmp_path):
    assert listening_sockets() == []
    s = Session(random_checkpoint(), config=SessionConfig(realtime=True, fps=4, transcript_dir=tmp_path))
    s.start(SyntheticSource(fps=8, realtime=True, num_frames=40))
    s.ask("What do you see?")
    time.sleep(1.0)
    during = listening_sockets()
    s.stop()
    assert during == [] and listening_sockets() == []
    assert any(isinstance(e, E.FrameSeen) for e in s.poll()) or s.transcript_path.exists()


def code_files() -> list[Path]:
    files = [
        ROOT / "main.py",
        *sorted((ROOT / "engine").rglob("*.py")),
        *sorted((ROOT / "app").rglob("*.py")),
    ]
    return [f for f in files if "tests" not in f.parts]


def test_trust_remote_code_is_never_used():
    """As a name or a string key (trust_remote_code=..., {"trust_remote_code": ...}); prose may say 'never'."""
    uses = []
    for f in code_files():
        for tok in tokenize.generate_tokens(io.StringIO(f.read_text(encoding="utf-8")).readline):
            name = tok.string.strip("'\"") if tok.type == tokenize.STRING else tok.string
            if tok.type in (tokenize.NAME, tokenize.STRING) and name == "trust_remote_code":
                uses.append(f"{f.relative_to(ROOT)}:{tok.start[0]}")
    assert uses == []


def test_only_the_loader_downloads_and_no_pickled_weights_are_loaded_elsewhere():
    downloads, pickle_risk = [], []
    for f in code_files():
        rows = f.read_text(encoding="utf-8").splitlines()
        for i, row in enumerate(rows):
            if "snapshot_download(" in row or "hf_hub_download(" in row:
                downloads.append(str(f.relative_to(ROOT)))
            if "Model" in row and ".from_pretrained(" in row and "use_safetensors=True" not in row:
                pickle_risk.append(f"{f.relative_to(ROOT)}:{i + 1}")  # may fall back to a .bin pickle
            if "torch.load(" in row or "pickle.load" in row:
                pickle_risk.append(f"{f.relative_to(ROOT)}:{i + 1}")
    assert sorted(set(downloads)) == ["engine/loading.py"] and pickle_risk == []


@pytest.fixture
def hub(tmp_path, monkeypatch):
    import huggingface_hub

    folder = save_checkpoint(random_checkpoint(), tmp_path / "snapshot")
    calls = []

    def fake(repo_id, **kw):
        calls.append({"repo_id": repo_id, **kw})
        if kw.get("local_files_only"):  # the hub cache is empty: only the network would have it
            raise FileNotFoundError(repo_id)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    return calls


def test_hub_downloads_only_the_id_given_and_no_code_or_pickles(hub):
    m = load_checkpoint("some-user/some-model")
    assert m.source == "some-user/some-model"
    cache, call = hub  # the hub cache is looked at first, then the one download
    assert cache["local_files_only"] and "local_files_only" not in call
    assert call["repo_id"] == cache["repo_id"] == "some-user/some-model"
    assert not {"revision", "repo_type", "endpoint", "trust_remote_code"} & set(call)
    patterns = call["allow_patterns"]
    assert patterns and "*" not in patterns
    for bad in ("x.bin", "x.pt", "x.pth", "x.ckpt", "x.pkl", "modeling_x.py", "x.py", "x.so", "x.sh"):
        assert not any(__import__("fnmatch").fnmatch(bad, p) for p in patterns), (bad, patterns)


@pytest.mark.parametrize(
    "spec", ["../../etc", "http://evil.example/x/y", "a/b/c", "user/../../x", "/abs/missing/path", "-rf/x"]
)
def test_ids_that_are_not_hub_ids_never_reach_the_hub(hub, spec):
    with pytest.raises(LoadError):
        load_model(spec)
    assert hub == []


def test_local_only_never_reaches_the_hub(hub):
    with pytest.raises(LoadError, match="local only"):
        load_model("some-user/some-model", local_only=True)
    assert hub and all(c["local_files_only"] for c in hub)  # the cache was looked at, the network never


@pytest.mark.parametrize(
    "bad",
    ["..", ".", "../../x", "a/../../b", "..\\x", "x/../y", "~root", "x\x00y", "a\nb", "/", "C:\\x", "con:x"],
)
def test_transcript_names_stay_in_the_sessions_folder(tmp_path, bad):
    with pytest.raises(ValueError, match="Invalid session id"):
        session_path(tmp_path, bad)
    with pytest.raises(ValueError):
        TranscriptWriter.for_session(tmp_path, bad)
    assert list(tmp_path.iterdir()) == []


def test_session_transcripts_are_named_by_a_safe_id(tmp_path):
    s = Session(random_checkpoint(), config=SessionConfig(realtime=False, transcript_dir=tmp_path))
    s.start(SyntheticSource(fps=1, realtime=False, num_frames=1))
    list(s.events(timeout=30))
    assert s.transcript_path == session_path(tmp_path, s.session_id)


def test_settings_cannot_move_the_users_folders(tmp_path, monkeypatch):
    from app.settings import AppPaths, load_settings

    monkeypatch.setenv("MOSS_LIVE_HOME", str(tmp_path))
    path = tmp_path / "settings.yaml"
    path.write_text("sessions: /etc\nlogs: ../../x\nconfig: /\nruntime: /tmp\nmodels: /\n")
    settings, messages = load_settings(path)
    assert len(messages) == 5 and all("unknown setting" in m for m in messages)
    paths = AppPaths.from_platform()
    for p in (paths.config, paths.sessions, paths.models, paths.logs, paths.runtime):
        assert p.resolve().is_relative_to(tmp_path.resolve())

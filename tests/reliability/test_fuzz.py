"""Fuzz the protocol layer with hypothesis (few examples here; `python -m engine.bench fuzz` runs many)."""

import pytest

pytest.importorskip("hypothesis", reason="hypothesis is not installed")

from hypothesis import HealthCheck, settings  # noqa: E402

from engine.bench import fuzz  # noqa: E402
from engine.bundled import random_checkpoint  # noqa: E402

CI = settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def props(tmp_path_factory):
    return fuzz.properties(random_checkpoint().tokenizer, tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize(
    "name",
    [
        "tokenizer literal text",
        "question control tokens",
        "events.from_dict on JSON",
        "event round trip",
        "transcript bytes",
    ],
)
def test_property(props, name):
    CI(props[name])()


def test_settings_file_never_crashes_the_loader(tmp_path):
    """The app's settings loader on YAML-like text, any text, any bytes: Settings and sentences."""
    from hypothesis import given
    from hypothesis import strategies as st

    from app.settings import Settings, load_settings

    path = tmp_path / "settings.yaml"

    @CI
    @given(st.one_of(fuzz.yaml_like, st.text(), st.binary(max_size=64)))
    def check(data):
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
        s, messages = load_settings(path)
        assert isinstance(s, Settings)
        assert all(isinstance(m, str) and m.strip() for m in messages)

    check()


def test_fuzz_runner_counts_examples():
    results = fuzz.run_all(5, tok=random_checkpoint().tokenizer)
    assert set(results) == {
        "tokenizer literal text",
        "question control tokens",
        "events.from_dict on JSON",
        "event round trip",
        "transcript bytes",
    }
    assert all(n >= 1 for n, _ in results.values())

"""The shape of the code: no import cycles (lazy imports inside functions count too), and the engine
imports nothing from the app. Read from the source with `ast`, so nothing is executed."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    files = [p for pkg in ("engine", "app") for p in (ROOT / pkg).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1] + [base]
                    ).strip(".")
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for n in names:
                if n in modules and n != mod:
                    graph[mod].add(n)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if n in ("engine", "app"):  # the package roots only re-export (lazily, by name)
                continue
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_engine_imports_nothing_from_the_app():
    graph = import_graph()
    bad = sorted(
        f"{m} -> {n}"
        for m, deps in graph.items()
        if m.startswith("engine")
        for n in deps
        if n.startswith("app")
    )
    assert bad == []


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_of_the_app_or_engine_is_over_600_lines():
    """A newcomer reads a module whole: long files get split along their seams."""
    long = {
        str(p.relative_to(ROOT)): n
        for pkg in ("engine", "app")
        for p in (ROOT / pkg).rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600
    }
    assert not long, long


def private_reads(path: Path) -> list[str]:
    """`obj._name` where obj is not self/cls (nor a library module): one module reaching into
    another's private fields."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    libraries = {"torch", "os", "sys", "np", "cv2", "ctypes", "cfg"}  # cfg: transformers' configs
    out = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id not in {"self", "cls", *libraries}
        ):
            out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value.id}.{node.attr}")
    return out


def test_no_module_reads_another_modules_private_fields():
    found = [
        r for pkg in ("engine", "app") for p in sorted((ROOT / pkg).rglob("*.py")) for r in private_reads(p)
    ]
    assert not found, found


def test_the_private_read_finder_finds_one(tmp_path):
    (tmp_path / "x.py").write_text("def f(dec):\n    return dec._flush()\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert private_reads(tmp_path / "x.py") == ["x.py:2 dec._flush"]
    finally:
        ROOT = saved

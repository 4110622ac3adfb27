"""The code's shape, checked from source with `ast` (nothing is imported): no import cycles in medgan/ and
training/ (counting imports inside functions and under TYPE_CHECKING), medgan/ free of gradio and training code,
no overlong functions. See docs/architecture.md."""
from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGES = ("medgan", "training")
MAX_FUNCTION_LINES = 80
# Functions allowed to be longer: argparse parser builders and CLI entry points (a flat list of options) and
# app.py's build_demo (the UI layout, one widget per line).
LONG_BY_NATURE = {"build_parser", "parse_args", "main", "build_demo"}
# Known exceptions, each with its reason. Remove an entry once its function is split: the test fails on
# entries that are no longer needed, so this list stays true.
ALLOWED_LONG: dict[tuple[str, str], str] = {
}
FORBIDDEN_IN_MEDGAN = {"gradio", "gradio_client", "training"}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages (a package is its __init__.py)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def all_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every Import/ImportFrom node at any depth: inside functions and under `if TYPE_CHECKING:` too (a cycle
    that only type checkers or one code path follow is still a cycle)."""
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def imported_names(name: str, path: Path, known: set[str], source: str | None = None) -> set[str]:
    """Absolute names `name` imports (relative imports resolved; `from pkg import sub` gives pkg.sub when sub
    is a module, else pkg)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in all_imports(ast.parse(path.read_text() if source is None else source, str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            out.add(sub if sub in known else target)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: {m for m in imported_names(name, path, known) if m in known and m != name}
            for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, …, a], or None (iterative DFS, white/grey/black)."""
    state: dict[str, int] = {}
    for root in sorted(graph):
        if state.get(root):
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_inside_functions_and_under_type_checking_count():
    source = """
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from .generator import Generator
def f():
    from . import latent
"""
    names = imported_names("medgan.explore", ROOT / "medgan" / "explore.py", set(modules()), source)
    assert {"medgan.generator", "medgan.latent"} <= names


def test_no_import_cycles_in_medgan_and_training():
    graph = import_graph()
    assert "medgan.export.base" in graph and "medgan.export.dicom" in graph  # the walk sees subpackages
    assert "medgan.export.base" in graph["medgan.export.dicom"]
    assert "training.data.ingest" in graph["training.data.load"]  # and training's subpackages
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_medgan_imports_neither_gradio_nor_training():
    mods, bad = modules(), []
    for name, path in mods.items():
        if name.split(".")[0] != "medgan":
            continue
        for imported in imported_names(name, path, set(mods)):
            if imported.split(".")[0] in FORBIDDEN_IN_MEDGAN:
                bad.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not bad, "\n".join(bad)


def long_functions() -> dict[tuple[str, str], int]:
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))] + [ROOT / "app.py"]
    found = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in LONG_BY_NATURE:
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found[(str(path.relative_to(ROOT)), node.name)] = lines
    return found


def test_no_function_is_longer_than_80_lines():
    found = long_functions()
    over = [f"{file}: {name}() is {lines} lines" for (file, name), lines in sorted(found.items())
            if (file, name) not in ALLOWED_LONG]
    assert not over, f"functions over {MAX_FUNCTION_LINES} lines (split them along their stages):\n" + "\n".join(over)
    stale = [f"{file}: {name}()" for file, name in ALLOWED_LONG if (file, name) not in found]
    assert not stale, "ALLOWED_LONG lists functions that are short now (or gone); remove them:\n" + "\n".join(stale)


def test_vendored_modules_import_only_each_other():
    """training/publish/export_medigan.VENDORED is copied into medigan packages as `_medgan/`: what those modules import
    of medgan must be copied too."""
    tree = ast.parse((ROOT / "training" / "publish" / "export_medigan.py").read_text())
    vendored = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                    and any(getattr(t, "id", "") == "VENDORED" for t in node.targets))
    mods, bad = modules(), []
    for module in vendored:
        name = f"medgan.{module}"
        for imported in imported_names(name, mods[name], set(mods)):
            if imported.split(".")[0] == "medgan" and imported.removeprefix("medgan.") not in vendored:
                bad.append(f"{name} imports {imported}")
    assert not bad, "vendored modules import what is not vendored:\n" + "\n".join(bad)

"""The house rules that a machine can check: no import cycle in crnn_core, no function over
~80 lines, the head kind named only in heads.py."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "crnn_core"
MAX_BODY = 80


def _imports(path: Path) -> set[str]:
    """The crnn_core modules a module imports at run time (any depth; TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", "") == "TYPE_CHECKING" for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and id(node) not in typing_only:
            found.update([node.module.split(".")[0]] if node.module else [alias.name for alias in node.names])
    return found


def test_no_import_cycle_in_the_library():
    modules = {p.stem: p for p in LIBRARY.glob("*.py")}
    graph = {name: _imports(path) & modules.keys() for name, path in modules.items()}
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(graph[name]):
            assert state.get(dep) != "open", "import cycle: " + " -> ".join(trail[trail.index(dep):] + [dep])
            if dep not in state:
                visit(dep, trail + [dep])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_function_body_over_80_lines():
    long = []
    for path in sorted(LIBRARY.glob("*.py")) + sorted((REPO / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.end_lineno - node.body[0].lineno + 1
                if body > MAX_BODY:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({body} lines)")
    assert not long, long


def test_only_heads_py_compares_head_names():
    """A third head is one class in heads.py: nothing else may branch on 'ctc' or 'softmax'."""
    offenders = []
    for path in sorted(LIBRARY.glob("*.py")) + sorted((REPO / "cli").glob("*.py")):
        if path.name == "heads.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                names = [c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
                if any(name in ("ctc", "softmax") for name in names):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders

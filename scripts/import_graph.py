#!/usr/bin/env python3
"""Print the import graph of launcher/ (who imports whom inside the package) and any cycle in it.

Module-level imports and imports inside functions count (a lazy import is still a dependency; marked
`(lazy)`); imports under `if TYPE_CHECKING:` do not (they never run).
Exit code 1 when there is a cycle.   Usage: python scripts/import_graph.py
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "launcher"


def imports_of(path: Path) -> dict[str, bool]:
    """launcher modules imported by the file -> whether the import is lazy (inside a function)."""
    tree = ast.parse(path.read_text())
    found: dict[str, bool] = {}

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                continue  # annotations only: not imported at run time
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module:
                names = [child.module] + [f"{child.module}.{a.name}" for a in child.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "launcher" and len(parts) > 1 and (PACKAGE / f"{parts[1]}.py").is_file():
                    found[parts[1]] = found.get(parts[1], True) and inner
            visit(child, inner)

    visit(tree, False)
    found.pop(path.stem, None)
    return found


def cycles(graph: dict[str, dict[str, bool]]) -> list[list[str]]:
    out, state = [], {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph.get(node, {})):
            if state.get(dep) == "open":
                out.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                walk(dep, [*stack, dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    return out


def main() -> int:
    graph = {p.stem: imports_of(p) for p in sorted(PACKAGE.glob("*.py"))}
    for module, deps in graph.items():
        shown = ", ".join(f"{d}{' (lazy)' if lazy else ''}" for d, lazy in sorted(deps.items()))
        print(f"{module:16} -> {shown or '-'}")
    found = cycles(graph)
    for cycle in found:
        print("cycle: " + " -> ".join(cycle))
    print(f"{len(found)} cycle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

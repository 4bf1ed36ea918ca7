#!/usr/bin/env python3
"""The import graph of launcher/ and trainer/ by subpackage, checked against the layout's rules.

Every import counts: at module level, inside a function (lazy: still a dependency) and under
`if TYPE_CHECKING:` (type-only: it never runs, but a reader follows it all the same, so a circle through
one is still a circle). Printed: each subpackage and what it imports, then every broken rule and every
cycle, between modules or between subpackages. Exit code 1 when anything is broken.

Usage: python scripts/import_graph.py [--root DIR]   (DIR holds launcher/ and trainer/; default: this checkout)
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGES = ("launcher", "trainer")
TENSOR_LIBRARIES = ("torch", "deepspeed", "transformers", "peft")
# (who, what it must not import, why). A name covers the module and everything below it.
RULES = [
    ("launcher", TENSOR_LIBRARIES, "the launcher renders and submits without a tensor library"),
    ("launcher.render", ("launcher.cluster",), "rendering is a pure function of the spec: no cluster client"),
    ("launcher.spec", ("launcher.render", "launcher.cluster", "launcher.local", "launcher.estimate",
                       "launcher.commands"), "the job spec is the bottom layer of the launcher"),
    ("trainer.data", ("trainer.training", "trainer.observability", "trainer.checkpoints"),
     "the loop consumes data, not the other way round"),
    ("trainer.observability", ("trainer.training",), "the loop reports to observability"),
    ("trainer.config", ("trainer.data", "trainer.training", "trainer.checkpoints", "trainer.observability"),
     "the config is the contract everything else reads"),
    ("trainer.storage", ("trainer.config", "trainer.data", "trainer.training", "trainer.checkpoints",
                         "trainer.observability"), "storage serves every subsystem"),
    ("trainer", ("launcher",), "the pods run the trainer without the launcher"),
]
ENTRY_POINTS = {"launcher.cli": ("launcher.__main__",), "launcher.commands": ("launcher.cli",)}


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_names(root: Path) -> set[str]:
    names = set()
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def imports_of(path: Path, known: set[str]) -> dict[str, str]:
    """Imported name -> how ("", "lazy" or "type-only"); our modules resolved to the module, others to their
    top-level package."""
    found: dict[str, str] = {}
    rank = {"": 0, "lazy": 1, "type-only": 2}

    def add(name: str, how: str) -> None:
        parts = name.split(".")
        if parts[0] in PACKAGES:
            while parts and ".".join(parts) not in known:
                parts.pop()
            name = ".".join(parts)
        else:
            name = parts[0]
        if name and (name not in found or rank[how] < rank[found[name]]):
            found[name] = how

    def visit(node: ast.AST, how: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = how
            if isinstance(child, ast.If) and ast.unparse(child.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                inner = "type-only"
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and not how:
                inner = "lazy"
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, inner)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                for alias in child.names:  # `from pkg import module` names a module; else the name is in pkg
                    add(f"{child.module}.{alias.name}", inner)
            visit(child, inner)

    visit(ast.parse(path.read_text()), "")
    return found


def module_graph(root: Path) -> dict[str, dict[str, str]]:
    known = module_names(root)
    graph = {}
    for name in sorted(known):
        path = root / Path(*name.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        graph[name] = {dep: how for dep, how in imports_of(path, known).items() if dep != name}
    return graph


def subpackage(name: str) -> str:
    """launcher.render.manifests -> launcher.render; a top-level module is its own unit."""
    return ".".join(name.split(".")[:2])


def package_graph(graph: dict[str, dict[str, str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for module, deps in graph.items():
        unit = subpackage(module)
        out.setdefault(unit, set()).update(
            subpackage(d) for d in deps if d.split(".")[0] in PACKAGES and subpackage(d) != unit)
    return out


def broken_rules(graph: dict[str, dict[str, str]]) -> list[str]:
    out = []
    for module, deps in graph.items():
        for who, banned, why in RULES:
            for dep, how in deps.items():
                if under(module, who) and any(under(dep, b) for b in banned):
                    out.append(f"{module} imports {dep}{f' ({how})' if how else ''}: {why}")
        for dep in deps:
            for target, allowed in ENTRY_POINTS.items():
                if under(dep, target) and not under(module, target) and module not in allowed:
                    out.append(f"{module} imports {dep}: only {', '.join(allowed)} may import {target}")
    return out


def tensor_chains(graph: dict[str, dict[str, str]]) -> list[str]:
    """Launcher imports of the trainer (or of a library) that pull a tensor library in: from each such import of
    a launcher module (its lazy ones run with its commands), follow what runs at import time, parent packages
    included. A tensor library imported inside a trainer function (merge_lora's, for export --merge) is not
    reached: it loads only when that function runs."""
    out = []
    for module in sorted(m for m in graph if under(m, "launcher")):
        for start, how in sorted(graph[module].items()):
            if how == "type-only" or start not in graph or under(start, "launcher"):
                continue
            chain = {start: [module, start]}
            queue = [start]
            while queue:
                node = queue.pop(0)
                parents = [".".join(node.split(".")[:i]) for i in range(1, node.count(".") + 1)]
                for dep in sorted(d for d, h in graph.get(node, {}).items() if not h) + parents:
                    if dep in chain:
                        continue
                    chain[dep] = chain[node] + [dep]
                    if dep in TENSOR_LIBRARIES:
                        out.append(f"{module} reaches {dep} when it runs: {' -> '.join(chain[dep])}: "
                                   "the launcher renders and submits without a tensor library")
                        queue = []
                        break
                    queue.append(dep)
    return out


def cycles(graph: dict[str, set[str]] | dict[str, dict[str, str]]) -> list[list[str]]:
    out, state = [], {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(d for d in graph.get(node, ()) if d in graph):
            if state.get(dep) == "open":
                out.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                walk(dep, [*stack, dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    root = parser.parse_args(argv).root
    graph = module_graph(root)
    packages = package_graph(graph)
    for unit in sorted(packages):
        print(f"{unit:24} -> {', '.join(sorted(packages[unit])) or '-'}")
    problems = broken_rules(graph) + tensor_chains(graph)
    problems += ["module cycle: " + " -> ".join(c) for c in cycles(graph)]
    problems += ["package cycle: " + " -> ".join(c) for c in cycles(packages)]
    for problem in problems:
        print(f"broken: {problem}")
    rules = len(RULES) + len(ENTRY_POINTS) + 1  # + the tensor libraries reached through other modules
    print(f"{rules} rules, {len(graph)} modules, {len(problems)} broken")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

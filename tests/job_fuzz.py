"""Whole job files for property-based fuzzing, derived from the job file's JSON schema
(`llmlaunch schema`, JobSpec.model_json_schema()), so every key the CLI knows is reached, not only the
ones an example or a CLI flag touches.

- `documents()`: a complete valid job (every section written out) with a few keys replaced by values that
  fit the key's schema (type, bounds, enum, pattern), deleted, replaced by any JSON at all, or broken by
  one of the changes below, with the keys of those breaks. A file with a break in force must be refused
  (exit 2) naming each broken key; any other may still be refused (a rule across keys, a missing data
  file), and none may crash the CLI.
- `certainly_invalid()`: the same valid job with exactly one change the schema forbids outright (a
  value of a type the key does not take, out of bounds, not in the enum, against the pattern, an unknown
  key, a required key missing). The CLI must refuse it with one line naming the key, exit 2.

Checked by tests/fuzz_checks.py, in tests/test_cli_fuzz.py (CI) and bench/fuzz_job_file.py (thousands).
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from launcher.spec.job_spec import JobSpec

TESTS = Path(__file__).resolve().parent
DATA = TESTS.parent / "examples" / "data"  # the bundled tokenizer and corpus (as tests/trainjobs.py)
TINY_MODEL = {"model_type": "llama", "vocab_size": 512, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 128}
IMAGE = "registry.example.com/ml/llmlaunch-trainer:0.1.0"
BASE = {
    "name": "fuzz",
    "cluster": {"nodes": 1, "gpus_per_node": 0, "image": IMAGE},
    "train": {
        "model": {"config": TINY_MODEL, "tokenizer": str(DATA / "tokenizer")},
        "data": {"train": str(DATA / "tiny" / "train.jsonl"), "seq_len": 64},
        "optim": {"lr": 3e-3},
        "run": {"output_dir": "OUT", "max_steps": 4, "micro_batch_size": 2, "save_every": 2},
        "deepspeed": {"preset": "zero2"},
        "metrics": {"enabled": False},
    },
}
SCHEMA = JobSpec.model_json_schema()
UNKNOWN_KEY = "zz_fuzz_unknown"
# One value of each JSON type, none of which pydantic's lax mode turns into another type
# (no numeric or boolean-looking strings: "fuzz?" is no number, bool or quantity).
OF_TYPE = {"object": {"fuzz": 1}, "array": [[1]], "string": "fuzz?", "integer": 7, "boolean": True, "null": None}


def full_base() -> dict:
    """BASE with every section written out at its defaults (so each key has a parent to change it in)."""
    return JobSpec.model_validate(BASE).model_dump(mode="json")


def resolve(node: dict) -> dict:
    while "$ref" in node:
        target = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def branches(node: dict) -> list[dict]:
    node = resolve(node)
    return [resolve(b) for b in node["anyOf"]] if "anyOf" in node else [node]


def json_types(node: dict) -> set[str] | None:
    """JSON types a key accepts; None when it accepts anything."""
    types: set[str] = set()
    for b in branches(node):
        if "const" in b or "enum" in b:
            types |= {_type_of(v) for v in ([b["const"]] if "const" in b else b["enum"])}
        elif "type" not in b:
            return None
        else:
            types |= set(b["type"] if isinstance(b["type"], list) else [b["type"]])
    if "number" in types:
        types.add("integer")
    return types


def _type_of(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null",
            list: "array", dict: "object"}[type(value)]


@functools.cache
def key_paths() -> tuple[tuple[tuple[str, ...], str], ...]:
    """(path, $defs name or '') of every key of the schema, through every section."""
    out = []

    def walk(node: dict, path: tuple[str, ...]) -> None:
        for b in branches(node):
            for key, child in (b.get("properties") or {}).items():
                out.append(((*path, key), ""))
                if len(path) < 4:
                    walk(child, (*path, key))

    walk(SCHEMA, ())
    return tuple(sorted(set(out)))


def schema_at(path: tuple[str, ...]) -> dict:
    node: dict = SCHEMA
    for key in path:
        node = next(b["properties"][key] for b in branches(node) if key in (b.get("properties") or {}))
    return node


# ---- values that fit a schema -------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                         st.text(max_size=12))
any_json = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def fitting(node: dict, depth: int = 0) -> st.SearchStrategy:
    return st.one_of([_fitting_branch(b, depth) for b in branches(node)])


def _strings(b: dict) -> st.SearchStrategy:
    low, high = b.get("minLength", 0), b.get("maxLength")
    if "pattern" in b:
        text = st.from_regex(b["pattern"], fullmatch=True)
        # Python's re: a pattern's $ also matches before a final newline; the schema's patterns do not
        text = text.filter(lambda s: not s.endswith("\n"))
    else:
        text = st.text(max_size=min(high or 24, 24))
    return text.filter(lambda s: low <= len(s) <= (high if high is not None else len(s)))


def _fitting_branch(b: dict, depth: int) -> st.SearchStrategy:
    if "const" in b:
        return st.just(b["const"])
    if "enum" in b:
        return st.sampled_from(b["enum"])
    types = b.get("type")
    if types is None:
        return any_json
    if isinstance(types, list):
        return st.one_of([_fitting_branch({**b, "type": t}, depth) for t in types])
    if types == "null":
        return st.none()
    if types == "boolean":
        return st.booleans()
    if types == "integer":
        low = b.get("minimum", b["exclusiveMinimum"] + 1 if "exclusiveMinimum" in b else None)
        high = b.get("maximum", b["exclusiveMaximum"] - 1 if "exclusiveMaximum" in b else None)
        return st.integers(low, high)
    if types == "number":
        return st.floats(b.get("minimum", b.get("exclusiveMinimum")), b.get("maximum", b.get("exclusiveMaximum")),
                         exclude_min="exclusiveMinimum" in b, exclude_max="exclusiveMaximum" in b, allow_nan=False)
    if types == "string":
        return _strings(b)
    if types == "array":
        if "prefixItems" in b:
            return st.tuples(*[fitting(item, depth + 1) for item in b["prefixItems"]]).map(list)
        items = fitting(b["items"], depth + 1) if "items" in b and depth < 3 else json_scalars
        return st.lists(items, min_size=b.get("minItems", 0), max_size=min(b.get("maxItems", 3), 3))
    if types == "object":
        if depth >= 3:
            return st.just({})
        props = b.get("properties") or {}
        required = set(b.get("required", []))
        fixed = st.fixed_dictionaries({k: fitting(v, depth + 1) for k, v in props.items() if k in required},
                                      optional={k: fitting(v, depth + 1)
                                                for k, v in props.items() if k not in required})
        extra = b.get("additionalProperties", True)
        if extra is False or props:
            return fixed
        names = b.get("propertyNames") or {}
        keys = st.from_regex(names["pattern"], fullmatch=True) if "pattern" in names else st.text(max_size=8)
        if "not" in names:
            keys = keys.filter(lambda k: not re.search(names["not"]["pattern"], k))
        values = any_json if extra is True else fitting(extra, depth + 1)
        return st.dictionaries(keys.filter(lambda k: not k.endswith("\n")), values, max_size=3)
    raise AssertionError(f"schema type {types!r} not handled")


# ---- whole documents ------------------------------------------------------------------------------------


def _parent(doc: dict, path: tuple[str, ...], create: bool) -> dict | None:
    node = doc
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            if not create:
                return None
            node[key] = {}
        node = node[key]
    return node


@st.composite
def documents(draw) -> tuple[dict, tuple[str, ...]]:
    """A valid job with 0-4 changes: keys replaced by values fitting their schema, deleted, set to any JSON,
    or broken by one of invalid_changes(); and the dotted keys of the breaks still in force at the end
    (a later change may have replaced the key or a section above it). Any of those makes the file
    certainly invalid: the CLI must refuse it, naming each."""
    doc = full_base()
    breaks: dict[tuple[str, ...], tuple[Any, list]] = {}
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["fit", "fit", "fit", "delete", "any", "break"]))
        if action == "break":
            path, value, _ = draw(st.sampled_from(invalid_changes()))
            parent = _parent(doc, path, create=False)
            if parent is None:  # an earlier change removed the section
                continue
            if value is DELETE:
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = value = copy.deepcopy(value)
            breaks[path] = (value, _chain(doc, path))
            continue
        path, _ = draw(st.sampled_from(key_paths()))
        parent = _parent(doc, path, create=True)
        if action == "delete":
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(fitting(schema_at(path)) if action == "fit" else any_json)
    return doc, tuple(".".join(p) for p, (value, chain) in breaks.items() if _in_force(doc, p, value, chain))


def _chain(doc: dict, path: tuple[str, ...]) -> list:
    """The section objects from the document down to the key's parent."""
    out = [doc]
    for key in path[:-1]:
        out.append(out[-1][key])
    return out


def _in_force(doc: dict, path: tuple[str, ...], value: Any, chain: list) -> bool:
    now = [doc]
    for key in path[:-1]:
        if not isinstance(now[-1], dict) or key not in now[-1]:
            return False
        now.append(now[-1][key])
    if any(a is not b for a, b in zip(now, chain, strict=True)):  # a section above was replaced
        return False
    parent = now[-1]
    return path[-1] not in parent if value is DELETE else path[-1] in parent and parent[path[-1]] is value


def _violations(node: dict) -> list[tuple[Any, str]]:
    """(value, what it breaks) for one key's schema: each certainly refused."""
    out = []
    types = json_types(node)
    if types is not None:
        out += [(value, f"type {kind}") for kind, value in OF_TYPE.items() if kind not in types]
    for b in branches(node):
        kind = b.get("type")
        if "enum" in b and all(isinstance(v, str) for v in b["enum"]):
            out.append(("not-one-of-them", "enum"))
        if kind in ("integer", "number"):
            if "minimum" in b:
                out.append((b["minimum"] - 1, "minimum"))
            if "exclusiveMinimum" in b:
                out.append((b["exclusiveMinimum"], "exclusiveMinimum"))
            if "maximum" in b:
                out.append((b["maximum"] + 1, "maximum"))
            if "exclusiveMaximum" in b:
                out.append((b["exclusiveMaximum"], "exclusiveMaximum"))
        if kind == "string" or (isinstance(kind, list) and "string" in kind):
            if "maxLength" in b:
                out.append(("a" * (b["maxLength"] + 1), "maxLength"))
            if b.get("minLength", 0) > 0:
                out.append(("", "minLength"))
            if "pattern" in b:
                out.append(("x\n", "pattern (a trailing newline)"))
                out.append(("a\x00b", "pattern (a control character)"))
        if kind == "array" and "minItems" in b:
            out.append(([0.5] * (b["minItems"] - 1), "minItems"))
        if kind == "array" and "maxItems" in b:
            out.append(([0.5] * (b["maxItems"] + 1), "maxItems"))
    return out


@functools.cache
def invalid_changes() -> tuple[tuple[tuple[str, ...], Any, str], ...]:
    """Every certainly invalid single change of full_base(): (path, value or DELETE, what it breaks)."""
    base = full_base()
    changes = []
    objects = [()] + [p for p, _ in key_paths()]
    for path in objects:  # an unknown key in each section that forbids them
        node = _get(base, path)
        if isinstance(node, dict) and any(b.get("additionalProperties") is False for b in branches(schema_at(path))):
            changes.append(((*path, UNKNOWN_KEY), 1, "unknown key"))
            for b in branches(schema_at(path)):
                changes += [((*path, key), DELETE, "required") for key in b.get("required", []) if key in node]
    for path, _ in key_paths():
        if isinstance(_get(base, path[:-1]), dict):
            changes += [(path, value, what) for value, what in _violations(schema_at(path))]
    return tuple(changes)


DELETE = object()


def _get(doc: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def apply_change(change: tuple) -> tuple[dict, str, str]:
    """(document, dotted key, what it breaks) of one of invalid_changes()."""
    path, value, what = change
    doc = full_base()
    parent = _parent(doc, path, create=False)
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = copy.deepcopy(value)
    return doc, ".".join(path), what


def certainly_invalid() -> st.SearchStrategy:
    """full_base() with one change its schema forbids, as apply_change gives it."""
    return st.sampled_from(invalid_changes()).map(apply_change)

"""trainer/yaml_io.py reads and writes through libyaml the same documents yaml.safe_load / safe_dump do."""

from __future__ import annotations

import pytest
import yaml

from trainer import yaml_io
from trainjobs import REPO

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def test_libyaml_is_used_where_pyyaml_has_it():
    assert yaml.__with_libyaml__, "PyYAML without libyaml: every job file and manifest takes the slow path"
    assert yaml_io.SafeLoader is yaml.CSafeLoader and yaml_io.SafeDumper is yaml.CSafeDumper


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_same_documents_as_the_pure_python_classes(path):
    text = path.read_text()
    job = yaml_io.load(text)
    assert job == yaml.safe_load(text)
    assert yaml_io.dump(job["train"], sort_keys=False) == yaml.safe_dump(job["train"], sort_keys=False)


def test_unsafe_tags_are_refused():
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml_io.load("!!python/object/apply:os.system ['true']")

import subprocess
import sys
from pathlib import Path

import pytest

# Tests import their small helpers (tests/trainjobs.py, tests/monitoring_checks.py, tests/schema_check.py)
# by module name.
sys.path.insert(0, str(Path(__file__).parent))

# Fixtures that start real servers live in tests/fixtures/ (one module each).
pytest_plugins = ["tests.fixtures.prometheus", "tests.fixtures.control_plane", "tests.fixtures.node"]

# A test with none of these markers is a `unit` test (pytest -m unit: the fast tier, no servers, tools
# or training). The markers themselves are described in pyproject.toml.
HEAVY = ("distributed", "training", "cluster", "prometheus", "helm", "tools", "pods", "slow", "s3", "mlflow")
# Server fixture -> the markers a test that requests it must carry.
SERVERS = {"control_plane": ("cluster", "pods"), "controller_manager": ("cluster", "pods"), "node": ("pods",),
           "node_images": ("pods",), "prometheus_server": ("prometheus",), "s3_server": ("s3",)}
# Programs a unit test must not start (their marker says why the test is slow or needs an install).
HEAVY_PROGRAMS = {"helm": "helm", "kubectl": "tools", "kube-apiserver": "cluster", "etcd": "cluster",
                  "kube-controller-manager": "cluster", "kubelet": "pods", "kube-scheduler": "pods",
                  "prometheus": "prometheus", "promtool": "prometheus", "checkov": "tools", "podman": "pods",
                  "torchrun": "distributed", "mlflow": "mlflow"}
HEAVY_MODULES = {"torch.distributed.run": "distributed", "trainer": "training", "moto.server": "s3"}  # python -m ...


def pytest_collection_modifyitems(config, items):
    wrong = []
    for item in items:
        marks = {m.name for m in item.iter_markers()}
        for fixture, needed in SERVERS.items():
            if fixture in item.fixturenames and not marks & set(needed):
                wrong.append(f"{item.nodeid} uses the {fixture} fixture without a {' or '.join(needed)} marker")
        if not marks & set(HEAVY):
            item.add_marker(pytest.mark.unit)
    if wrong:
        raise pytest.UsageError("tests that start a server must be marked (pyproject.toml markers):\n"
                                + "\n".join(wrong))


def heavy_reason(args) -> str | None:
    """The marker a command line needs, when it starts a server, a tool or a training run."""
    argv = [str(a) for a in ([args] if isinstance(args, (str, Path)) else args)]
    if not argv:
        return None
    program = Path(argv[0].split()[0]).name
    for name, marker in HEAVY_PROGRAMS.items():
        if program == name or program.startswith(f"{name}-"):  # the binaries carry versions: kubelet-v1.20.2
            return marker
    if "-m" in argv[:-1]:
        module, rest = argv[argv.index("-m") + 1], argv[argv.index("-m") + 2:]
        if module in ("launcher", "launcher.cli") and rest[:1] == ["train"]:
            return "training"
        return HEAVY_MODULES.get(module)
    return None


@pytest.fixture(autouse=True)
def _unit_tests_start_no_heavy_process(request, monkeypatch):
    """A unit test that starts a server, a tool or a training process fails, naming the marker it lacks."""
    if request.node.get_closest_marker("unit") is None:
        return
    original = subprocess.Popen.__init__

    def guarded(self, args, *rest, **kwargs):
        reason = heavy_reason(args)
        if reason is not None:
            pytest.fail(f"a unit test started {args!r}: mark it @pytest.mark.{reason} (tests/conftest.py)")
        original(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)

import sys
from pathlib import Path

# Tests import their small helpers (tests/trainjobs.py, tests/monitoring_checks.py, tests/schema_check.py)
# by module name.
sys.path.insert(0, str(Path(__file__).parent))

# Fixtures that start real servers live in tests/fixtures/ (one module each).
pytest_plugins = ["tests.fixtures.prometheus", "tests.fixtures.control_plane", "tests.fixtures.node"]

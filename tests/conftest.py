import sys
from pathlib import Path

# Tests import their small helpers (tests/trainjobs.py, tests/monitoring_checks.py) by module name.
sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["tests.fixtures.prometheus"]

# Fixtures that start real servers live in tests/fixtures/ (one module each).
pytest_plugins = ["fixtures.control_plane"]

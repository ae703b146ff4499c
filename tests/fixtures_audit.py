"""pytest fixtures for audit tests (registered in tests/conftest.py)."""

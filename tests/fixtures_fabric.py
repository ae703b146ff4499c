"""pytest fixtures for fabric tests (registered in tests/conftest.py)."""

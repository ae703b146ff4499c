"""pytest fixtures for firmware tests (registered in tests/conftest.py)."""

"""pytest fixtures for ingest tests (registered in tests/conftest.py)."""

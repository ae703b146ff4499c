"""pytest fixtures for ledger tests (registered in tests/conftest.py)."""

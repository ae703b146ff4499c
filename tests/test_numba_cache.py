"""Numba's kernel cache in an installed wattproof whose package directory the user cannot write (a container
image): it moves to the user's cache directory instead of failing at import; an explicit setting wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.numba_cache import use_writable_cache


def test_a_read_only_package_moves_the_cache_to_the_users_cache_dir(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "site-packages" / "ledger"
    (pkg / "__pycache__").mkdir(parents=True)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("ledger.numba_cache.os.access", lambda path, mode: not str(path).startswith(str(pkg)))
    chosen = use_writable_cache(pkg)
    assert chosen == str(tmp_path / "cache" / "wattproof" / "numba")
    import os

    assert os.environ["NUMBA_CACHE_DIR"] == chosen


def test_a_writable_package_or_an_explicit_setting_is_left_alone(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert use_writable_cache(tmp_path) is None  # tmp_path is writable: Numba's default
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/somewhere")
    monkeypatch.setattr("ledger.numba_cache.os.access", lambda path, mode: False)
    assert use_writable_cache(tmp_path) is None
    import os

    assert os.environ["NUMBA_CACHE_DIR"] == "/somewhere"

"""Where Numba keeps the kernels it compiles (``@njit(cache=True)`` in ledger/ and audit/).

Numba writes them beside the modules (``__pycache__``). An installed wattproof whose site-packages the
service's user cannot write (a container image, a system-wide install) made Numba fail at import
("no locator available"); then the cache goes to the user's cache directory instead. An explicit
``NUMBA_CACHE_DIR`` always wins. Must run before Numba is imported: the packages that use Numba call
``use_writable_cache`` first thing.
"""

from __future__ import annotations

import os
from pathlib import Path


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) if path.exists() else os.access(path.parent, os.W_OK)


def use_writable_cache(package_dir: Path | None = None) -> str | None:
    """Point ``NUMBA_CACHE_DIR`` at a per-user directory when the package's ``__pycache__`` cannot be written;
    returns the directory chosen (None: Numba's default is usable, or the variable was set already)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    here = package_dir or Path(__file__).resolve().parent
    if _writable(here / "__pycache__"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    target = str(Path(base) / "wattproof" / "numba")
    os.environ["NUMBA_CACHE_DIR"] = target
    return target

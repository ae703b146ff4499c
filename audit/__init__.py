"""audit: Numba kernels and statsmodels baselines over stored readings; findings and scoring.

Owns the detectors (pure functions over column arrays, in ``audit.kernels``), loading the columns
from the store, and the findings they produce. Reads the store; never writes readings.
"""

from ledger.numba_cache import use_writable_cache as _use_writable_cache

_use_writable_cache()

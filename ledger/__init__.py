"""ledger: what makes a reading evidence. RFC 8785 leaves (canonical.py, bulk.py), RFC 6962 trees and
proofs (merkle.py, proofs.py), sealing windows into hash-chained batches (seal.py), the ledger
interface and its local and Fabric backends (backend.py, local.py, fabric/, chaincode/), replay of the
store against the ledger (verify.py, replay.py) and the native helpers (native/, nativelib.py)."""

from ledger.numba_cache import use_writable_cache as _use_writable_cache

_use_writable_cache()

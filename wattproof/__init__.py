"""wattproof: the thin shell. Command line, configuration and the wiring of embedded defaults.

Owns: ``wattproof`` console script (``wattproof.cli``), the data directory (``wattproof.config``),
embedded broker/database processes (``wattproof.embedded``) and the demo (``wattproof.demo``).
Must not: hold domain logic; it calls firmware_sim, ingest, audit and ledger. Nothing imports it
but its entry point (and the test harness, which reuses the embedded services).
"""

__version__ = "0.1.0"

"""Shared shapes and number formats of regulator reports.

Owns: ``ReportSummary`` (what ``build_report`` returns), ``ReportError``, the file names, and the
number formats the PDF prints — one function per unit, so a test can find in the PDF's text exactly
what the JSON holds. No I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from device.errors import WattproofError

FORMATS: Final = ("pdf", "csv", "parquet", "json")
HOUR_MS: Final = 3_600_000
REPORT_FORMAT: Final = "wattproof-report/1"
PDF_NAME: Final = "report.pdf"
JSON_NAME: Final = "report.json"
BATCHES_NAME: Final = "batches.jsonl"
CSV_NAME: Final = "hourly.csv"
PARQUET_NAME: Final = "hourly.parquet"
MANIFEST_NAME: Final = "manifest.json"
#: The columns of the hourly data (CSV and Parquet), per site and hour; energy in Wh, coverage 0–1.
HOURLY_COLUMNS: Final = ("site", "hour_start", "hour_start_ms", "import_wh", "export_wh", "pv_wh", "consumption_wh",
                         "coverage")


class ReportError(WattproofError, ValueError):
    """A report that cannot be built: no sites for the organisation, a period not on whole hours, an
    output directory that is not empty, an unknown format, no key to sign with."""


@dataclass(frozen=True)
class ReportSummary:
    """What ``build_report`` wrote and anchored."""

    out_dir: Path
    report_id: str  # the anchored header's batch_id: report:<org>:<stamp>:<root[:8]>
    org: str
    period: tuple[int, int]  # [from_ms, to_ms)
    files: dict[str, str]  # file name -> SHA-256 (hex), manifest.json excluded
    root: str  # RFC 6962 root over the (name, sha256) leaves
    manifest_sha256: str  # SHA-256 of the canonical manifest: the header's findings_digest
    receipt: dict  # type: ignore[type-arg]
    verdict_set: str | None  # the verdict set the report shows
    verdicts: dict[str, int] = field(default_factory=dict)  # verdict -> count
    seconds: float = 0.0


def _finite(x: float | None) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def mwh(wh: float | None) -> str:
    """Energy printed from Wh as MWh with 3 decimals (kWh resolution)."""
    return f"{wh / 1e6:,.3f} MWh" if _finite(wh) else "n/a"


def pct(fraction: float | None) -> str:
    """A fraction printed as a percentage with 2 decimals."""
    return f"{fraction * 100:.2f} %" if _finite(fraction) else "n/a"


def tco2e(t: float | None) -> str:
    return f"{t:,.4f} tCO2e" if _finite(t) else "n/a"


def measured(value: float | None, unit: str) -> str:
    """A verdict's measured value in its own unit (%, tCO2e, MWh), 4 significant decimals."""
    if not _finite(value):
        return "n/a"
    return f"{value:.4f} {unit}"


def esrs_value(value: float | None, unit: str) -> str:
    """An ESRS table value in its unit (MWh, %, tCO2e)."""
    if value is None:
        return "not available"
    return tco2e(value) if unit == "tCO2e" else f"{value:.2f} %" if unit == "%" else mwh(value * 1e6)


def count(n: int | None) -> str:
    return f"{n:,}" if n is not None else "n/a"

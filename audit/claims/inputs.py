"""CSV inputs of the claims engine: grid carbon intensity, emission factors, the certificate register.

Owns: reading the three CSV formats of docs/claims.md ("The claim file and the inputs") with the stdlib ``csv`` module, every
error one ``InputError`` naming ``file:line:column`` and what was expected; the emission-factor
lookup ``factor_for``. A header line is required; columns are found by name, so their order is free
and unknown extra columns are ignored. Times are ISO 8601 UTC on whole hours (``2026-06-01T13:00:00Z``
or a date ``2026-06-01`` = midnight UTC); numbers are plain decimals (no NaN, no infinity, no
negatives).
Must not: judge certificates (``certificates.py`` does) or read meter data.

    g = read_intensity("scenarios/claims/intensity.csv", "NL", start_ms, hours)   # gCO2e/kWh per hour
    f = factor_for(read_factors("scenarios/claims/factors.csv"), "residual", "NL", start_ms, end_ms)
    certs = read_certificates("scenarios/claims/greenwash.certificates.csv")     # CertificateRow (line, source)
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from audit.claims.model import Certificate
from audit.claims.schema import parse_utc_ms
from device.errors import WattproofError

HOUR_MS = 3_600_000
INTENSITY_COLUMNS = ("region", "hour_start", "gco2e_per_kwh")
FACTOR_COLUMNS = ("kind", "scope", "period_start", "period_end", "gco2e_per_kwh", "source")
CERTIFICATE_COLUMNS = ("cert_id", "mwh", "production_start", "production_end", "producer", "technology", "holder",
                       "cancelled_for", "cancelled_period_start", "cancelled_period_end", "claim_ids")
FACTOR_KINDS = ("supplier", "residual")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,127}")


class InputError(WattproofError, ValueError):
    """A CSV input that cannot be used. The message starts with ``file:line:column``."""


def iso_hour(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class EmissionFactor:
    kind: str  # supplier | residual
    scope: str  # the supplier id (kind supplier) or the grid region id (kind residual)
    start_ms: int  # [start, end): the period the factor applies to
    end_ms: int
    gco2e_per_kwh: float
    source: str  # publication the value comes from
    line: int = 0  # line in its file (0: not from a file)


@dataclass(frozen=True)
class CertificateRow(Certificate):
    """A ``Certificate`` as read from a register, with where it was read (for findings and errors)."""

    line: int = 0
    source: str = ""


class _Row:
    __slots__ = ("source", "line", "values", "index")

    def __init__(self, source: str, line: int, values: list[str], index: dict[str, int]) -> None:
        self.source, self.line, self.values, self.index = source, line, values, index

    def error(self, column: str, expected: str) -> InputError:
        col = self.index[column] + 1
        got = self.values[col - 1] if col <= len(self.values) else None
        shown = "nothing" if got is None else repr(got[:60])
        return InputError(f"{self.source}:{self.line}:{col}: column `{column}`: expected {expected}, got {shown}")

    def text(self, column: str, required: bool = True) -> str:
        i = self.index[column]
        if i >= len(self.values):
            raise self.error(column, "a value (the line has too few fields)")
        value = self.values[i].strip()
        if required and not value:
            raise self.error(column, "a value")
        return value

    def token(self, column: str) -> str:
        value = self.text(column)
        if not _TOKEN.fullmatch(value):
            raise self.error(column, "an identifier (letters, digits, _ . : / -)")
        return value

    def number(self, column: str, positive: bool = False) -> float:
        value = self.text(column)
        x = float(value) if _NUMBER.fullmatch(value) else math.nan
        if not math.isfinite(x) or x < 0 or (positive and x == 0):
            raise self.error(column, "a positive decimal number" if positive else "a non-negative decimal number")
        return x

    def hour_ms(self, column: str) -> int:
        value = self.text(column)
        try:
            ms = parse_utc_ms(value)
        except (ValueError, OverflowError):
            raise self.error(column, "an ISO 8601 UTC time such as 2026-06-01T13:00:00Z") from None
        if ms % HOUR_MS:
            raise self.error(column, "a time on a whole UTC hour")
        return ms

    def interval(self, start: str, end: str) -> tuple[int, int]:
        a, b = self.hour_ms(start), self.hour_ms(end)
        if b <= a:
            raise self.error(end, f"a time after `{start}` (intervals are [start, end))")
        return a, b


def _rows(path: str | Path, columns: Sequence[str]) -> Iterator[_Row]:
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{source}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(f"{source}:{line}:{col}: expected UTF-8 text, got byte 0x{raw[exc.start]:02x}") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    index: dict[str, int] | None = None
    try:
        for values in reader:
            if not values or all(not v.strip() for v in values):
                continue
            if index is None:
                names = [v.strip() for v in values]
                for c in columns:
                    if c not in names:
                        raise InputError(f"{source}:{reader.line_num}:{len(names) + 1}: expected a header with "
                                         f"column `{c}` (columns: {','.join(columns)})")
                    if names.count(c) > 1:
                        raise InputError(f"{source}:{reader.line_num}:{names.index(c, names.index(c) + 1) + 1}: "
                                         f"column `{c}` appears twice in the header")
                index = {c: names.index(c) for c in columns}
                continue
            yield _Row(source, reader.line_num, values, index)
    except csv.Error as exc:
        raise InputError(f"{source}:{reader.line_num}:1: expected CSV ({exc})") from None
    if index is None:
        raise InputError(f"{source}:1:1: empty file: expected a header line {','.join(columns)}")


# --- grid carbon intensity --------------------------------------------------------------------


def read_intensity(path: str | Path, region: str, start_ms: int, hours: int) -> np.ndarray:
    """Hourly location-based grid intensity (gCO2e/kWh, float64 [hours]) of ``region`` over
    [start_ms, start_ms + hours·1 h). Every row of the file is checked; an hour of the period that the
    file lacks is an error naming the first such hour."""
    if start_ms % HOUR_MS or hours < 0:
        raise ValueError("start_ms must be on a whole hour and hours ≥ 0")
    out = np.full(hours, np.nan)
    seen: dict[tuple[str, int], int] = {}
    for row in _rows(path, INTENSITY_COLUMNS):
        reg = row.token("region")
        t = row.hour_ms("hour_start")
        g = row.number("gco2e_per_kwh")
        first = seen.setdefault((reg, t), row.line)
        if first != row.line:
            raise row.error("hour_start", f"each region's hour once (already on line {first})")
        h = (t - start_ms) // HOUR_MS
        if reg == region and 0 <= h < hours:
            out[h] = g
    missing = np.flatnonzero(np.isnan(out))
    if missing.size:
        raise InputError(f"{path}: region {region}: no intensity for hour {iso_hour(start_ms + int(missing[0]) * HOUR_MS)}"
                         f" ({missing.size} of {hours} hours of the period missing)")
    return out


# --- emission factors -----------------------------------------------------------------------------


def read_factors(path: str | Path) -> list[EmissionFactor]:
    """Supplier-specific and residual-mix emission factors. Two factors of one (kind, scope) whose
    periods overlap are an error (the lookup must never have to choose)."""
    out: list[EmissionFactor] = []
    for row in _rows(path, FACTOR_COLUMNS):
        kind = row.text("kind")
        if kind not in FACTOR_KINDS:
            raise row.error("kind", "supplier or residual")
        scope = row.token("scope")
        a, b = row.interval("period_start", "period_end")
        g = row.number("gco2e_per_kwh")
        source = row.text("source")
        for f in out:
            if f.kind == kind and f.scope == scope and f.start_ms < b and a < f.end_ms:
                raise row.error("period_start", f"a period not overlapping the {kind} factor for {scope} on line {f.line}")
        out.append(EmissionFactor(kind, scope, a, b, g, source, row.line))
    return out


def factor_for(factors: Sequence[EmissionFactor], kind: str, scope: str, start_ms: int, end_ms: int) -> EmissionFactor:
    """The one factor of (kind, scope) whose period covers [start_ms, end_ms) entirely.

    None, or more than one, is an ``InputError`` (a period spanning two factor periods has no single
    factor: split the claim period or publish a factor for it)."""
    hits = [f for f in factors if f.kind == kind and f.scope == scope and f.start_ms <= start_ms and end_ms <= f.end_ms]
    if not hits:
        raise InputError(f"no {kind} emission factor for {scope!r} covers {iso_hour(start_ms)} … {iso_hour(end_ms)}")
    if len(hits) > 1:
        lines = ", ".join(str(f.line) for f in hits)
        raise InputError(f"{len(hits)} {kind} emission factors for {scope!r} cover {iso_hour(start_ms)} … "
                         f"{iso_hour(end_ms)} (lines {lines}): ambiguous")
    return hits[0]


# --- certificate register -------------------------------------------------------------------------


def read_certificates(path: str | Path) -> list[CertificateRow]:
    """Every row of an energy attribute certificate register, in file order.

    A ``cert_id`` on two rows is not an error here: both rows are returned, each with its line, and
    ``certificates.certificate_findings`` reports the double counting."""
    out: list[CertificateRow] = []
    for row in _rows(path, CERTIFICATE_COLUMNS):
        cert_id = row.token("cert_id")
        mwh = row.number("mwh", positive=True)
        p0, p1 = row.interval("production_start", "production_end")
        producer, technology, holder = row.text("producer"), row.token("technology"), row.text("holder")
        cancelled_for = row.text("cancelled_for", required=False) or None
        c_start = row.text("cancelled_period_start", required=False)
        c_end = row.text("cancelled_period_end", required=False)
        c0 = c1 = None
        if cancelled_for is None:
            if c_start or c_end:
                raise row.error("cancelled_for" if not c_start else "cancelled_period_start",
                                "a cancellation period only with `cancelled_for` (empty = not cancelled)")
        else:
            if not _TOKEN.fullmatch(cancelled_for):
                raise row.error("cancelled_for", "an organisation id")
            c0, c1 = row.interval("cancelled_period_start", "cancelled_period_end")
        ids = tuple(s.strip() for s in row.text("claim_ids", required=False).split(";") if s.strip())
        for s in ids:
            if not _TOKEN.fullmatch(s):
                raise row.error("claim_ids", "claim ids separated by `;`")
        out.append(CertificateRow(cert_id, mwh, p0, p1, producer, technology, holder, cancelled_for, c0, c1, ids,
                                  line=row.line, source=row.source))
    return out

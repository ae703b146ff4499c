"""Completeness: the store's readings against the signed frames, and the store's batches against the ledger.

Owns the checks that make ``verify`` complete in both directions (docs/proofs.md, "What must hold"):
- **reading ↔ frame**: every stored reading in scope equals the reading at its ``idx`` in a valid signed
  frame (recorded SHA-256, strict wire decoding, Ed25519 by the device key the verifier pinned); no
  key ``(device, seq, idx)`` is stored twice; every reading of a valid frame is stored;
- **reading ↔ batch**: a batch's readings are its window's readings whose keys its anchored leaves hold
  (the replay compares them); a reading in a sealed window that no batch holds is either signed evidence
  that arrived late (pending, listed) or a problem (unbacked);
- **ledger ↔ store**: every batch the ledger holds in scope is in the store (the other direction —
  every stored batch is on the ledger — is the replay's, ``ledger/replay.py``);
- **trust**: every device key in the store is one the verifier pinned.
Each violation is a ``Problem`` naming the reading, frame, batch or device. Pure reporting: never writes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
import zstandard

from device.wire import (
    READING_AFTER_SEND_MS,
    READING_HISTORY_MS,
    READING_WINDOW,
    b64url,
    decode_frame,
    reading_window_problem,
)
from ledger.backend import LedgerBackend
from ledger.trust import DeviceKeys, Trust

# --- problem kinds (documented in docs/proofs.md, "verify: what each problem means") ----------------
READING_DIFFERS: Final = "reading_differs_from_frame"
READING_UNBACKED: Final = "reading_without_signed_frame"
DUPLICATE_KEY: Final = "duplicate_reading_key"
SIGNED_READING_MISSING: Final = "signed_reading_missing"
FRAME_INVALID: Final = "frame_invalid"
BATCH_MISSING_IN_STORE: Final = "batch_missing_in_store"
DEVICE_KEY_NOT_PINNED: Final = "device_key_not_pinned"
FABRIC_RECEIPT_INVALID: Final = "fabric_receipt_invalid"
PENDING: Final = "pending_amendment"  # not a problem: signed late readings of a sealed window, not yet amended

#: readings lie within this window around their frame's sent_ms (docs/wire-format.md, "Reading window")
_BEFORE_SEND_MS: Final = READING_HISTORY_MS
_AFTER_SEND_MS: Final = READING_AFTER_SEND_MS

Key = tuple[str, int, int]


@dataclass(frozen=True)
class Problem:
    kind: str
    what: str  # "reading" | "frame" | "batch" | "device"
    ref: tuple[Any, ...]  # (device, seq, idx) | (device, seq) | (batch_id,) | (device,)
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "what": self.what, "ref": list(self.ref), "detail": self.detail}


@dataclass
class Completeness:
    problems: list[Problem]
    pending: list[Key]  # signed late readings of sealed windows awaiting their amendment batch
    readings: int  # stored readings checked
    frames: int  # frames checked
    #: the invalid frames as (device code in sorted device-id order, seq, why), when every frame in scope was checked
    frame_bad: list[tuple[int, int, str]] | None = None


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def stored_keys(conn: psycopg.Connection[Any]) -> dict[str, DeviceKeys]:
    """The store's registry: each device's keys with their validity intervals (``device_keys``, migration 0801;
    docs/device-identity.md). A claim of the store, like everything in it."""
    out: dict[str, list[tuple[bytes, int | None, int | None]]] = {}
    for dev, key, lo, hi in conn.execute("SELECT device_id, public_key, valid_from_ms, valid_until_ms FROM device_keys "
                                         "ORDER BY device_id, valid_from_ms NULLS FIRST"):
        out.setdefault(dev, []).append((bytes(key), lo, hi))
    return {d: DeviceKeys(tuple(p)) for d, p in out.items()}


def device_keys(conn: psycopg.Connection[Any], trust: Trust | None,
                site: str | None = None) -> tuple[dict[str, DeviceKeys], list[Problem]]:
    """The keys each device's frames are checked with, each valid at the frames' signed ``sent_ms`` in its
    interval: the pinned ones (every key the store shows for the device must be among them, else a problem),
    or, without trust, the store's own (self-consistency only)."""
    problems: list[Problem] = []
    stored = stored_keys(conn)
    if trust is None:
        return stored, problems
    keys: dict[str, DeviceKeys] = {}
    for dev, current, dsite in conn.execute("SELECT device_id, public_key, site_id FROM devices ORDER BY device_id"):
        pinned = trust.device_keys(dev)
        shown = dict.fromkeys([b64url(k) for k, _, _ in stored[dev].periods] if dev in stored else [])
        shown[b64url(bytes(current))] = None  # the registry's current key, and every key of its history
        if site is None or dsite == site:
            for key in shown:
                if key not in pinned:
                    problems.append(Problem(DEVICE_KEY_NOT_PINNED, "device", (dev,),
                                            f"the store's key {key} for {dev} is not one the verifier pinned"
                                            + ("" if pinned else " (no key pinned for this device)")))
        periods = trust.device_periods(dev)
        if periods is not None:
            keys[dev] = periods  # its frames must verify with a pinned key valid at their time
    return keys, problems


def check(dsn: str, backend: LedgerBackend, trust: Trust | None, site: str | None = None,
          start: datetime | None = None, end: datetime | None = None, snapshot: str | None = None,
          shared: dict[str, Any] | None = None, between: Any = None) -> Completeness:
    """Every completeness check over the scope (a site and/or a time range; everything by default), on columns
    (``ledger.complete_bulk``); ``check_rows`` is the row-by-row reference it is tested against. ``snapshot``,
    ``shared``, ``between``: see ``check_bulk``."""
    from ledger.complete_bulk import check_bulk

    return check_bulk(dsn, backend, trust, site, start, end, snapshot, shared, between)


def check_rows(dsn: str, backend: LedgerBackend, trust: Trust | None, site: str | None = None,
               start: datetime | None = None, end: datetime | None = None) -> Completeness:
    """Every completeness check over the scope, row by row: the reference."""
    lo = _ms(start) if start else None
    hi = _ms(end) if end else None
    unz = zstandard.ZstdDecompressor()
    problems: list[Problem] = []
    with psycopg.connect(dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            keys, key_problems = device_keys(conn, trust, site)
            problems += key_problems
            site_of = dict(conn.execute("SELECT device_id, site_id FROM devices").fetchall())
            verifiers = keys  # each frame with a key valid at its signed sent_ms
            # --- frames in scope → the signed readings
            f_rows = conn.execute(
                "SELECT f.device_id, f.seq, f.frame_sha256, f.raw_zstd FROM frames f JOIN devices d USING (device_id) "
                "WHERE (%(site)s::text IS NULL OR d.site_id = %(site)s) "
                "AND (%(lo)s::bigint IS NULL OR f.sent_ms >= %(lo)s - %(after)s) "
                "AND (%(hi)s::bigint IS NULL OR f.sent_ms < %(hi)s + %(before)s)",
                {"site": site, "lo": lo, "hi": hi, "after": _AFTER_SEND_MS, "before": _BEFORE_SEND_MS}).fetchall()
            signed: dict[Key, tuple[int, str, int, int]] = {}
            bad_frames: set[tuple[str, int]] = set()
            for dev, seq, sha, raw_z in f_rows:
                why = _frame_problem(bytes(raw_z), bytes(sha), dev, seq, verifiers.get(dev), unz, signed, lo, hi)
                if why is not None:
                    bad_frames.add((dev, seq))
                    problems.append(Problem(FRAME_INVALID, "frame", (dev, seq), why))
            # --- stored readings in scope
            r_rows = conn.execute(
                "SELECT r.device_id, r.seq, r.idx, (extract(epoch FROM r.ts) * 1000)::bigint, r.channel, r.energy_wh, "
                "r.power_w FROM readings r JOIN devices d USING (device_id) "
                "WHERE (%(site)s::text IS NULL OR d.site_id = %(site)s) "
                "AND (%(start)s::timestamptz IS NULL OR r.ts >= %(start)s) "
                "AND (%(end)s::timestamptz IS NULL OR r.ts < %(end)s) "
                "ORDER BY r.device_id, r.seq, r.idx, r.ts",
                {"site": site, "start": start, "end": end}).fetchall()
            batches = {b: (s, _ms(w0), _ms(w1), k) for b, s, w0, w1, k in conn.execute(
                "SELECT batch_id, site_id, window_start, window_end, kind FROM batches")}
            sealed_windows = {(s, w0): w1 for s, w0, w1, k in batches.values()}
            stored_keys = _check_readings(r_rows, signed, bad_frames, problems)
            pending = _pending(r_rows, signed, sealed_windows, site_of, _sealed_keys(conn, site, start, end))
            for k in sorted(signed.keys() - stored_keys):
                problems.append(Problem(SIGNED_READING_MISSING, "reading", k,
                                        f"reading {k} of a valid signed frame is not in the store"))
            problems += _ledger_vs_store(backend, set(batches), site, lo, hi)
    return Completeness(problems, pending, len(r_rows), len(f_rows))


def _frame_problem(raw_z: bytes, sha: bytes, dev: str, seq: int, key: Any, unz: zstandard.ZstdDecompressor,
                   signed: dict[Key, tuple[int, str, int, int]], lo: int | None, hi: int | None) -> str | None:
    """Check one stored frame (``ledger.verify.frame_problem``); when valid, add its readings in scope to ``signed``."""
    from ledger.verify import frame_problem

    if key is None:
        return "no key to check the device's signature with"
    why = frame_problem(raw_z, sha, key, unz)  # readable, its SHA-256, the device's signature
    if why is not None:
        return why
    frame = decode_frame(unz.decompress(raw_z))
    window = reading_window_problem(frame)  # and a frame the wire format admits (docs/wire-format.md)
    if window is not None:
        return f"{READING_WINDOW}: {window}"
    if (frame.device, frame.seq) != (dev, seq):
        return f"the signed frame is {frame.device} seq {frame.seq}, stored as {dev} seq {seq}"
    for i, r in enumerate(frame.readings):
        if (lo is None or r.ts_ms >= lo) and (hi is None or r.ts_ms < hi):
            signed[(dev, seq, i)] = (r.ts_ms, r.channel, r.energy_wh, r.power_w)
    return None


def _sealed_keys(conn: psycopg.Connection[Any], site: str | None, start: datetime | None,
                 end: datetime | None) -> set[Key]:
    """Every key the batches in scope hold (a batch's readings are its window's readings with these keys)."""
    out: set[Key] = set()
    for devs, seqs, idxs in conn.execute(
            "SELECT leaf_devices, leaf_seqs, leaf_idxs FROM batches WHERE (%(site)s::text IS NULL OR site_id = %(site)s) "
            "AND (%(start)s::timestamptz IS NULL OR window_end > %(start)s) "
            "AND (%(end)s::timestamptz IS NULL OR window_start < %(end)s)", {"site": site, "start": start, "end": end}):
        out.update(zip(devs, seqs, idxs, strict=False))
    return out


def _check_readings(rows: list[tuple[Any, ...]], signed: dict[Key, tuple[int, str, int, int]],
                    bad_frames: set[tuple[str, int]], problems: list[Problem]) -> set[Key]:
    seen: dict[Key, int] = defaultdict(int)
    for dev, seq, idx, ts, ch, e, p in rows:
        k = (dev, seq, idx)
        seen[k] += 1
        if seen[k] == 2:
            problems.append(Problem(DUPLICATE_KEY, "reading", k, f"reading key {k} is stored more than once"))
        want = signed.get(k)
        if want is None:
            why = "its frame is invalid" if (dev, seq) in bad_frames else "no valid signed frame holds it"
            problems.append(Problem(READING_UNBACKED, "reading", k, f"stored reading {k}: {why}"))
        elif want != (ts, ch, e, p):
            problems.append(Problem(READING_DIFFERS, "reading", k,
                                    f"stored reading {k} is {(ts, ch, e, p)}, the device signed {want}"))
    return set(seen)


def _pending(rows: list[tuple[Any, ...]], signed: dict[Key, tuple[int, str, int, int]],
             sealed_windows: dict[tuple[str, int], int], site_of: dict[str, str], sealed: set[Key]) -> list[Key]:
    """Readings equal to their signed frame's, in a window that has a batch, that no batch holds: late
    arrivals awaiting their amendment."""
    if not sealed_windows:
        return []
    out = []
    starts_by_site: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for (s, w0), w1 in sealed_windows.items():
        starts_by_site[s].append((w0, w1))
    for dev, seq, idx, ts, ch, e, p in rows:
        if (dev, seq, idx) in sealed or signed.get((dev, seq, idx)) != (ts, ch, e, p):
            continue
        if any(w0 <= ts < w1 for w0, w1 in starts_by_site.get(site_of.get(dev, ""), [])):
            out.append((dev, seq, idx))
    return out


def _ledger_vs_store(backend: LedgerBackend, stored: set[str], site: str | None, lo: int | None,
                     hi: int | None) -> list[Problem]:
    out = []
    for ev in backend.events():
        h = ev.header
        if h.kind in ("verdicts", "restatement", "report"):  # verdict sets (ledger.verdict_sets), report manifests
            continue
        if site is not None and h.site != site:
            continue
        if (lo is not None and h.window_end_ms <= lo) or (hi is not None and h.window_start_ms >= hi):
            continue
        if h.batch_id not in stored:
            start = datetime.fromtimestamp(h.window_start_ms / 1000, UTC).isoformat()
            out.append(Problem(BATCH_MISSING_IN_STORE, "batch", (h.batch_id,),
                               f"the ledger holds batch {h.batch_id} ({h.leaf_count} readings of site {h.site} from "
                               f"{start}), the store does not"))
    return out


def fabric_receipts(dsn: str, backend: Any, fabric_trust: Any, site: str | None, start: datetime | None,
                    end: datetime | None) -> list[Problem]:
    """Each stored batch's Fabric receipt proven offline: the block holding its transaction, the endorsements
    and the orderer's signature, against the pinned organisation roots (``ledger.fabric.evidence``)."""
    import msgspec

    from ledger.backend import Receipt
    from ledger.fabric.collect import collect_evidence
    from ledger.fabric.evidence import verify_evidence

    out: list[Problem] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT batch_id, header, receipt FROM batches WHERE (%(site)s::text IS NULL OR site_id = %(site)s) "
            "AND (%(start)s::timestamptz IS NULL OR window_end > %(start)s) "
            "AND (%(end)s::timestamptz IS NULL OR window_start < %(end)s) ORDER BY site_id, window_start, batch_id",
            {"site": site, "start": start, "end": end}).fetchall()
    for batch_id, header, receipt in rows:
        on_ledger = backend.get(batch_id)
        if on_ledger is None:
            continue  # the replay names it (missing_on_ledger)
        try:
            rec = msgspec.convert(receipt, Receipt)
            problems = verify_evidence(collect_evidence(backend, rec), bytes(header), receipt, fabric_trust)
        except Exception as exc:  # noqa: BLE001 — an unreadable receipt or block is a problem with a reason
            problems = [f"{type(exc).__name__}: {exc}"]
        out += [Problem(FABRIC_RECEIPT_INVALID, "batch", (batch_id,), p) for p in problems]
    return out

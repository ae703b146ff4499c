"""Loading hourly site energy from a real PostgreSQL store (audit/claims/load.py): the values of the
``energy_hourly`` view (gap, register reset), coverage, roles, the pandas reference loader, and the
metered production the certificate guard uses."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import psycopg
import pytest

from audit.claims import reference as ref
from audit.claims.load import load_site_hours, metered_production_wh
from audit.claims.model import ClaimsError, SiteHours
from firmware_sim.sim import simulate
from ingest.pipeline import ingest_payloads
from ingest.registry import register_device

S = 1_780_272_000_000  # 2026-06-01T00:00Z: the period is [S, S + 6 h); data start one hour earlier
H = 3_600_000
NAN = math.nan
MINUTES = (5, 20, 35, 50)  # 4 readings an hour


def ts(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def register(base: int, per_hour: list[int | None], drop: frozenset[tuple[int, int]] = frozenset(),
             restart_at: int | None = None) -> list[tuple[int, int]]:
    """(ts_ms, register Wh) readings from hour −1 on: ``per_hour[i]`` Wh in hour i − 1, spread evenly
    over its 4 readings; None = the register runs on but no reading is stored (a gap). ``drop``:
    (hour, reading) pairs not stored; ``restart_at``: the hour whose readings restart from 0."""
    out, reg = [], base
    for i, wh in enumerate(per_hour):
        h = i - 1
        if h == restart_at:
            reg = 0
        for k, minute in enumerate(MINUTES):
            reg += (wh if wh is not None else 300) // 4
            if wh is not None and (h, k) not in drop:
                out.append((S + h * H + minute * 60_000, reg))
    return out


# site s1, by hand (hours 0 … 5 of the period):
#   import: 400, 800, 200, [gap: no reading, 300 Wh flow], 500, 100 → hour 3 NaN, hour 4 = 300 + 500
#   export: 0, 100, 400 (one reading of four missing), 0, 0, 0 → hour 2 coverage 0.75
#   pv:     0, 300, 600, 300, 100, [register restarts at 0] → hour 5 NaN (the register fell)
S1 = {
    ("s1-main", "import"): register(10_000, [40, 400, 800, 200, None, 500, 100]),
    ("s1-main", "export"): register(5_000, [0, 0, 100, 400, 0, 0, 0], drop=frozenset({(2, 1)})),
    ("s1-pv", "pv"): register(70_000, [0, 0, 300, 600, 300, 100, 8], restart_at=5),
    ("s1-sub1", "import"): register(1_000, [4000] * 7),  # a sub-meter: inside main's import, never added
}
S2 = {("s2-main", "import"): register(0, [100] * 7), ("s2-main", "export"): register(0, [0] * 7)}


def insert(conn: psycopg.Connection[Any], series: dict[tuple[str, str], list[tuple[int, int]]]) -> None:
    for month in {ts(S - H), ts(S + 6 * H)}:
        conn.execute("SELECT ensure_readings_partition(%s)", (month,))
    rows = [(d, seq, ("import", "export", "pv").index(ch), ts(t), ch, e, 0)
            for (d, ch), rs in series.items() for seq, (t, e) in enumerate(rs)]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO readings (device_id, seq, idx, ts, channel, energy_wh, power_w) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)


@pytest.fixture
def store(store_db: str) -> str:
    with psycopg.connect(store_db) as conn:
        for site in ("s1", "s2", "s3"):
            conn.execute("INSERT INTO sites (site_id) VALUES (%s)", (site,))
        for dev, site, kind in [("s1-main", "s1", "main_meter"), ("s1-pv", "s1", "pv_inverter"),
                                ("s1-sub1", "s1", "sub_meter"), ("s2-main", "s2", "main_meter")]:
            conn.execute("INSERT INTO devices (device_id, site_id, kind, public_key, rated_power_w) "
                         "VALUES (%s, %s, %s, %s, 10000)", (dev, site, kind, bytes(32)))
        insert(conn, S1 | S2)
    return store_db


def energy_hourly(dsn: str, device: str, channel: str, start_ms: int, hours: int) -> np.ndarray:
    """The view's energy per hour of the period, NULL or negative → NaN, missing hour → NaN."""
    out = np.full(hours, NAN)
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for b, e in conn.execute("SELECT bucket, energy_wh FROM energy_hourly WHERE device_id = %s AND channel = %s",
                                 (device, channel)).fetchall():
            h = (int(b.timestamp() * 1000) - start_ms) // H
            if 0 <= h < hours and e is not None and e >= 0:
                out[h] = e
    return out


def test_site_hours_by_hand_with_a_gap_a_missing_reading_and_a_register_restart(store: str) -> None:
    s1, s2, s3 = load_site_hours(store, ["s1", "s2", "s3"], S, S + 6 * H)
    np.testing.assert_array_equal(s1.import_wh, [400, 800, 200, NAN, 800, 100])
    np.testing.assert_array_equal(s1.export_wh, [0, 100, 400, 0, 0, 0])
    np.testing.assert_array_equal(s1.pv_wh, [0, 300, 600, 300, 100, NAN])
    np.testing.assert_array_equal(s1.coverage, [1, 1, 0.75, 0, 1, 0])
    # s2 has no PV inverter: PV is zero, not unknown
    np.testing.assert_array_equal(s2.import_wh, [100] * 6)
    np.testing.assert_array_equal(s2.pv_wh, [0] * 6)
    np.testing.assert_array_equal(s2.coverage, [1] * 6)
    # s3 has no meter at all: everything unknown, nothing covered
    assert np.isnan(s3.import_wh).all() and np.isnan(s3.export_wh).all() and not s3.coverage.any()


def test_site_hours_equal_the_energy_hourly_view(store: str) -> None:
    (s1,) = load_site_hours(store, ["s1"], S, S + 6 * H)
    for series, (dev, ch) in [(s1.import_wh, ("s1-main", "import")), (s1.export_wh, ("s1-main", "export")),
                              (s1.pv_wh, ("s1-pv", "pv"))]:
        np.testing.assert_array_equal(series, energy_hourly(store, dev, ch, S, 6))


def test_first_hour_of_the_data_has_no_previous_register_and_is_unknown(store: str) -> None:
    (s2,) = load_site_hours(store, ["s2"], S - H, S + H)
    assert math.isnan(s2.import_wh[0]) and s2.coverage[0] == 0 and s2.import_wh[1] == 100
    # a period starting later reads the register of the last hour before it (here: 2 h earlier, over the gap)
    (s1,) = load_site_hours(store, ["s1"], S + 4 * H, S + 5 * H)
    assert s1.import_wh.tolist() == [800]


def test_period_not_in_whole_hours_is_refused(store: str) -> None:
    with pytest.raises(ClaimsError, match="whole UTC hours"):
        load_site_hours(store, ["s1"], S + 1, S + H)


def test_pandas_reference_loader_reads_energy_hourly_to_the_same_site_hours(store: str) -> None:
    got = load_site_hours(store, ["s1", "s2", "s3"], S, S + 6 * H)
    with psycopg.connect(store) as conn:
        want = ref.to_site_hours(ref.load_site_hours(conn, ["s1", "s2", "s3"], S, S + 6 * H), S)
    assert_same_site_hours(got, want)


def assert_same_site_hours(got: list[SiteHours], want: list[SiteHours]) -> None:
    assert [s.site for s in got] == [s.site for s in want]
    for a, b in zip(got, want, strict=True):
        for k in ("import_wh", "export_wh", "pv_wh", "coverage"):
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=f"{a.site} {k}")


def test_simulated_fleet_through_ingest_loads_like_the_reference(store_db: str) -> None:
    start = 1_780_272_000_000
    run = simulate(sites=2, days=0.5, seed=11, start_ms=start)
    for d in run.devices:
        register_device(store_db, d.record)
    msgs = [(m.topic, m.payload) for m in run.messages()]
    ingest_payloads(store_db, msgs[:40] + msgs[60:])  # some frames never arrive: partial hours
    sites = sorted({d.record.site for d in run.devices})
    got = load_site_hours(store_db, sites, start + H, start + 12 * H)
    with psycopg.connect(store_db) as conn:
        want = ref.to_site_hours(ref.load_site_hours(conn, sites, start + H, start + 12 * H), start + H)
    assert_same_site_hours(got, want)
    assert any((s.coverage < 1).any() for s in got) and all(np.isfinite(s.pv_wh).sum() > 6 for s in got)
    assert sum(float(np.nansum(s.pv_wh)) for s in got) > 0


def test_metered_production_sums_register_rises_and_ignores_a_restart(store: str) -> None:
    with psycopg.connect(store) as conn:
        assert metered_production_wh(conn, "nobody-pv", S, S + H) is None
        # last reading before S: 70 000; last before S + 5 h: 70 000 + 0 + 300 + 600 + 300 + 100
        assert metered_production_wh(conn, "s1-pv", S, S + 5 * H) == 1300
        # hour 5 restarts at 0 and climbs to 8: the fall adds nothing, the rises after it 2 + 2 + 2
        assert metered_production_wh(conn, "s1-pv", S, S + 6 * H) == 1306
        assert metered_production_wh(conn, "s2-main", S, S + 6 * H) == 0.0  # registered, no pv register
        # any alignment: from the reading at 01:35 (70 000 + 3 × 75) to the one at 02:20 (70 300 + 2 × 150)
        assert metered_production_wh(conn, "s1-pv", S + H + 36 * 60_000, S + 2 * H + 21 * 60_000) == 375

"""The Findings page's listing on a large store (``dashboard.queries.findings`` / ``findings_count``): the
newest findings matching the filters, oldest first, bounded by the limit, and how many match in all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from dashboard import queries as q

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _seed(dsn: str, per_site: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for site in ("a", "b"):
            conn.execute("INSERT INTO sites (site_id) VALUES (%s)", (site,))
            for i in range(per_site):
                conn.execute(
                    "INSERT INTO findings (run_id, site_id, device_id, kind, severity, start_ts, end_ts, evidence, "
                    "detector, detector_version) VALUES ('r', %s, NULL, %s, %s, %s, %s, '{}', 'wattproof.audit', '1')",
                    (site, "gap" if i % 2 else "spike", "medium" if i % 2 else "low", T0 + timedelta(hours=i),
                     T0 + timedelta(hours=i, minutes=5)))


def test_listing_beyond_the_limit_shows_the_newest_oldest_first_and_counts_them_all(store_db: str) -> None:
    _seed(store_db, 30)
    df = q.findings(store_db, limit=10)
    assert len(df) == 10 and q.findings_count(store_db) == 60
    assert list(df["start_ts"]) == sorted(df["start_ts"]) and df["start_ts"].min() == T0 + timedelta(hours=25)


def test_listing_and_count_apply_the_same_filters(store_db: str) -> None:
    _seed(store_db, 30)
    args = (["gap"], ["medium"], ["b"], T0 + timedelta(hours=10), T0 + timedelta(hours=20))
    df = q.findings(store_db, *args, limit=3)
    assert q.findings_count(store_db, *args) == 5  # hours 11, 13, 15, 17, 19 of site b
    assert set(df["site_id"]) == {"b"} and set(df["kind"]) == {"gap"} and len(df) == 3
    assert [t.hour for t in df["start_ts"]] == [15, 17, 19]

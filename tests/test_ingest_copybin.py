"""ingest.copybin builds exactly the rows psycopg's write_row would: both are COPYed into a real
PostgreSQL and compared, over hypothesis-generated frames (mixed channels, extreme values)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.wire import Reading
from ingest.copybin import readings_copy

ident = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,20}", fullmatch=True)
reading = st.builds(Reading, ts_ms=st.integers(0, 2**53 - 1).filter(lambda t: t < 253_402_300_799_000),
                    channel=st.sampled_from(["import", "export", "pv"]), energy_wh=st.integers(0, 2**53 - 1),
                    power_w=st.integers(-(2**53) + 1, 2**53 - 1))
frames = st.lists(st.tuples(ident, st.integers(0, 2**53 - 1), st.lists(reading, min_size=1, max_size=8)),
                  min_size=1, max_size=6)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # exact, unlike float seconds far in the future
COLS = "device_id, seq, idx, ts, channel, energy_wh, power_w"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames)
def test_copybin_rows_equal_psycopg_write_row(empty_db: str, fs: list) -> None:  # type: ignore[type-arg]
    with psycopg.connect(empty_db, autocommit=True) as conn:
        for t in ("a", "b"):
            conn.execute(f"CREATE TABLE IF NOT EXISTS {t} (device_id text, seq bigint, idx int, ts timestamptz, "
                         "channel text, energy_wh bigint, power_w bigint)")
            conn.execute(f"TRUNCATE {t}")
        data, n = readings_copy(fs)
        with conn.cursor().copy(f"COPY a ({COLS}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(data)
        with conn.cursor().copy(f"COPY b ({COLS}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(["text", "int8", "int4", "timestamptz", "text", "int8", "int8"])
            for device, seq, readings in fs:
                for i, r in enumerate(readings):
                    cp.write_row((device, seq, i, EPOCH + timedelta(milliseconds=r.ts_ms), r.channel,
                                  r.energy_wh, r.power_w))
        q = f"SELECT {COLS} FROM {{}} ORDER BY device_id, seq, idx, ts, channel, energy_wh, power_w"
        a = conn.execute(q.format("a")).fetchall()
        assert a == conn.execute(q.format("b")).fetchall()
        assert n == len(a) == sum(len(r) for _, _, r in fs)

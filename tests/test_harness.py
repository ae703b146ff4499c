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

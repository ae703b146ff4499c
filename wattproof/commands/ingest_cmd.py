"""`wattproof ingest`: run the ingest service until SIGTERM/SIGINT."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path

import typer

from device.publisher import broker_address
from ingest.quarantine import QuarantineLimits
from ingest.service import IngestConfig, IngestService
from ingest.validate import Limits
from wattproof.commands.pki_cmd import MQTT_CA, MQTT_CERT, MQTT_KEY, MQTT_PASSWORD, MQTT_USERNAME


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"ts": record.created, "level": record.levelname, "logger": record.name,
                           "msg": record.getMessage()})


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest_cmd(
        broker: str = typer.Option(..., "--broker", envvar="WATTPROOF_BROKER", help="mqtt://host:port or mqtts://host:port"),
        db: str = typer.Option(..., "--db", envvar="WATTPROOF_DB", help="PostgreSQL DSN."),
        client_id: str = typer.Option("wattproof-ingest", "--client-id",
                                      help="MQTT client id (persistent session); unique per worker."),
        batch_frames: int = typer.Option(500, "--batch-frames", min=1, help="Commit after this many frames…"),
        batch_ms: int = typer.Option(200, "--batch-ms", min=1, help="…or after this many milliseconds."),
        max_future_skew_s: int = typer.Option(300, "--max-future-skew-s", help="Reject frames sent further in the future."),
        max_age_days: float = typer.Option(7.0, "--max-age-days", help="Reject frames sent longer ago (offline spool limit)."),
        shared: bool = typer.Option(False, "--shared", help="Join the MQTT 5 shared subscription group 'ingest' "
                                    "(several workers split the load; see docs/store.md for the broker caveat)."),
        writers: int = typer.Option(2, "--writers", min=1, max=16, help="Database connections writing batches "
                                    "concurrently (acknowledged in order)."),
        registry_refresh_s: float = typer.Option(2.0, "--registry-refresh-s", min=0.1, help="Check the device "
                                                 "registry for changes (deactivations…) this often."),
        store_attempts: int = typer.Option(3, "--store-attempts", min=1, help="A message the database refuses this "
                                           "often alone is quarantined store_failed (and acknowledged)."),
        quarantine_max_payload: int = typer.Option(4096, "--quarantine-max-payload", min=64, help="Keep at most this "
                                                   "many bytes of an unauthenticated refused payload (+ its SHA-256)."),
        quarantine_topic_rows: int = typer.Option(60, "--quarantine-topic-rows", min=1, help="New quarantine rows per "
                                                  "topic and minute; beyond, refused messages are only counted."),
        quarantine_rows: int = typer.Option(1000, "--quarantine-rows", min=1, help="New quarantine rows per minute "
                                            "over all topics; beyond, refused messages are only counted."),
        metrics_port: int | None = typer.Option(None, "--metrics-port", help="Serve Prometheus metrics on this port."),
        json_logs: bool = typer.Option(False, "--json-logs", help="Log JSON lines."),
        mqtt_ca: Path | None = MQTT_CA, mqtt_cert: Path | None = MQTT_CERT, mqtt_key: Path | None = MQTT_KEY,
        mqtt_username: str | None = MQTT_USERNAME, mqtt_password: str | None = MQTT_PASSWORD,
    ) -> None:
        """Subscribe to every device's readings (shared subscription), validate, store, ack after commit."""
        handler = logging.StreamHandler()
        if json_logs:
            handler.setFormatter(_JsonFormatter())
        logging.basicConfig(level=logging.INFO, handlers=[handler])
        limits = Limits(future_skew_ms=max_future_skew_s * 1000, max_age_ms=int(max_age_days * 86_400_000))
        quarantine = QuarantineLimits(max_payload_bytes=quarantine_max_payload, rows_per_topic_minute=quarantine_topic_rows,
                                      rows_per_minute=quarantine_rows)
        addr = broker_address(broker, ca=mqtt_ca, cert=mqtt_cert, key=mqtt_key, username=mqtt_username,
                              password=mqtt_password)
        svc = IngestService(IngestConfig(broker_url=addr, dsn=db, client_id=client_id, batch_frames=batch_frames,
                                         batch_ms=batch_ms, limits=limits, metrics_port=metrics_port,
                                         shared=shared, writers=writers, registry_refresh_s=registry_refresh_s,
                                         store_attempts=store_attempts, quarantine=quarantine)).start()
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        signal.signal(signal.SIGINT, lambda *_: done.set())
        logging.getLogger("wattproof.ingest").info("ingesting from %s into the database", addr)
        while not done.wait(1.0):
            if svc.error is not None:
                svc.stop()
                raise typer.Exit(1)
        svc.stop()
        t = svc.totals
        typer.echo(f"stopped: {t.frames_accepted} frames, {t.readings_written} readings stored; "
                   f"quarantined {dict(t.quarantined)}", err=True)

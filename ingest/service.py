"""The ingest service: MQTT 5 subscriber → validate → batched idempotent write → ack.

Owns: the service lifecycle (``start()``, ``wait_idle()``, ``stop()``; SIGTERM in the CLI), the
paho-mqtt client (QoS 1, persistent session, shared subscription, **manual acks**, retained messages only
for a new subscription), the batching writer thread, reconnect to PostgreSQL with backoff (tenacity),
the validator's view of the device registry (re-read within ``registry_refresh_s`` of a change), and
Prometheus metrics.

Delivery contract (DESIGN invariant 1): a message is acknowledged (PUBACK) only after the
transaction holding its rows — or its quarantine row — has committed. If the process dies before
that, the broker redelivers it to the same persistent session (or, with a shared subscription,
to another worker) and the writer's (device_id, seq) idempotency makes the redelivery a no-op.
No single message stops the service (DESIGN invariant 8): a message the database refuses is
quarantined ``store_failed`` after bounded attempts and acknowledged (``writer.BatchWrite``); only a
lost database connection is waited out (backoff, nothing acked, exit after ``db_retry_s``).
The paho callback only enqueues. The work is a pipeline: the validator thread collects a batch,
validates and prepares it (CPU), and hands it to the writer threads (``writers``, each with its own
connection), which write and commit batches concurrently (mostly waiting for PostgreSQL, which then
works on two cores); each batch is acknowledged after its commit *and* after every earlier batch was
acknowledged, so PUBACKs keep the order of the PUBLISHes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import zstandard
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client import Counter as PCounter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from device.errors import WattproofError, dsn_location, redact, tcp_problem
from device.publisher import (
    BrokerAddress,
    PublishError,
    broker_address,
    refusal,
    watch_tls_refusals,
)
from ingest import reasons
from ingest.quarantine import QuarantineGate, QuarantineLimits
from ingest.registry_view import RegistryView
from ingest.validate import Limits, split_verdicts, validate_batch
from ingest.writer import BatchResult, BatchWrite, Prepared, StoreWriter, prepare

log = logging.getLogger("wattproof.ingest")

SUBSCRIPTION = "wattproof/v1/+/+/readings"
SHARE_GROUP = "ingest"


class IngestError(WattproofError, RuntimeError):
    """The service could not start or lost a dependency for longer than it may wait."""


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = PCounter("wattproof_ingest_frames_received", "Messages received", registry=r)
        self.accepted = PCounter("wattproof_ingest_frames_accepted", "Frames stored", registry=r)
        self.duplicates = PCounter("wattproof_ingest_frames_duplicate", "Redelivered frames (no-op)", registry=r)
        self.quarantined = PCounter("wattproof_ingest_frames_quarantined", "Frames quarantined", ["reason"], registry=r)
        self.dropped = PCounter("wattproof_ingest_quarantine_dropped", "Refused messages only counted "
                                "(quarantine row budget spent)", ["reason"], registry=r)
        self.store_refusals = PCounter("wattproof_ingest_store_refusals", "Batch parts the database refused "
                                       "(split and retried; store_failed after bounded attempts)", registry=r)
        self.readings = PCounter("wattproof_ingest_readings_written", "Readings stored", registry=r)
        self.commit_seconds = Histogram("wattproof_ingest_batch_commit_seconds", "Batch write+commit latency",
                                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        self.queue_depth = Gauge("wattproof_ingest_queue_depth", "Messages received, not yet committed", registry=r)
        self.lag_seconds = Gauge("wattproof_ingest_consumer_lag_seconds",
                                 "Receive time minus send time of the last committed frame", registry=r)


# a batch between the validator and the writers: (number, messages, prepared rows, receive time ms)
Ready = tuple[int, list[mqtt.MQTTMessage], Prepared, int]


@dataclass
class IngestConfig:
    broker_url: str | BrokerAddress  # an mqtt[s]:// URL, or one with TLS files and credentials (broker_address)
    dsn: str
    client_id: str = "wattproof-ingest"
    # MQTT 5 shared subscription ($share/ingest/...) lets several workers split the load. Mosquitto
    # 2.0 does not queue shared-subscription messages while no member of the group is connected
    # (found by test_broker_restart_mid_stream...), so the default is a plain persistent
    # subscription, which loses nothing across broker restarts; scale out with shared=True.
    shared: bool = False
    batch_frames: int = 500  # at most half the broker's in-flight limit (1000 in our configs): see docs/store.md
    batch_ms: int = 200
    limits: Limits = field(default_factory=Limits)
    protocol: int = 5
    metrics_port: int | None = None
    db_retry_s: float = 300.0  # give up (and exit non-zero, unacked) after this long without the DB
    writers: int = 2  # writer threads, each with its own connection: batches commit concurrently, ack in order
    registry_refresh_s: float = 2.0  # check the device registry for changes this often (and on unknown devices)
    store_attempts: int = 3  # a message the database refuses this often alone is quarantined store_failed
    quarantine: QuarantineLimits = field(default_factory=QuarantineLimits)


class IngestService:
    def __init__(self, cfg: IngestConfig, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics or Metrics()
        self.totals = BatchResult()
        self._q: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._last_activity = time.monotonic()
        self._error: BaseException | None = None
        # validated and prepared batches waiting for the writer: (messages, verdicts, prepared, receive time)
        self._ready: queue.Queue[Ready | None] = queue.Queue(maxsize=2)
        self._zstd = zstandard.ZstdCompressor(level=3)  # the validator's (not thread-safe)
        self._gate = QuarantineGate(cfg.quarantine)  # the validator's
        self._registry = RegistryView(cfg.dsn, cfg.registry_refresh_s)  # the validator's
        self._inflight = 0  # batches taken off the queue and not yet acknowledged
        self._next_ack = 0  # number of the batch whose turn it is to be acknowledged
        self._ack_turn = threading.Condition()
        self._validator = threading.Thread(target=self._run_validator, name="ingest-validator", daemon=True)
        self._slots = [_WriterSlot() for _ in range(max(1, cfg.writers))]
        self._threads = [threading.Thread(target=self._run_writer, args=(slot,), name=f"ingest-writer-{k}", daemon=True)
                         for k, slot in enumerate(self._slots)]
        self._lock = threading.Lock()
        proto = mqtt.MQTTv5 if cfg.protocol == 5 else mqtt.MQTTv311
        kwargs: dict[str, Any] = {} if proto == mqtt.MQTTv5 else {"clean_session": False}
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=proto,
                                   manual_ack=True, **kwargs)
        self._client.max_inflight_messages_set(cfg.batch_frames * (max(1, cfg.writers) + 3))
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    # --- lifecycle -------------------------------------------------------------------------
    def start(self, timeout_s: float = 30.0) -> IngestService:
        if self.cfg.metrics_port:
            start_http_server(self.cfg.metrics_port, registry=self.metrics.registry)
        for slot in self._slots:
            self._connect_db(slot)
        self._registry.refresh(force=True, strict=True)
        self._validator.start()
        for t in self._threads:
            t.start()
        try:
            self._broker = addr = broker_address(self.cfg.broker_url)
            addr.apply(self._client)  # username/password, and TLS (CA, client certificate) for mqtts://
        except PublishError as exc:
            self.stop()
            raise IngestError(str(exc)) from exc

        def tls_refused(why: str) -> None:  # our certificate refused, or the broker's untrusted: no retry
            self._error = IngestError(f"broker {addr} refused {self.cfg.client_id}: {why}")
            if getattr(self, "_started", False):
                log.error("%s", self._error)
            self._client.disconnect()

        watch_tls_refusals(self._client, tls_refused)
        if self._client.protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 7 * 86_400
            self._client.connect_async(addr.host, addr.port, 30, clean_start=False, properties=props)
        else:
            self._client.connect_async(addr.host, addr.port, 30)
        self._client.loop_start()
        deadline = time.monotonic() + timeout_s
        while not self._connected.wait(0.05):
            if self._error is not None or time.monotonic() > deadline:  # refused (no retry) or unreachable
                err = self._error
                self.stop()
                raise err if isinstance(err, IngestError) else IngestError(
                    f"broker at {addr} unreachable: {tcp_problem(addr.host, addr.port) or 'no connection'}"
                    f" after {timeout_s:.0f}s")
        self._started = True  # from now on a refusal is logged (before, start() raises it)
        return self

    def stop(self) -> None:
        """Stop taking messages, commit and ack what is queued, disconnect."""
        self._stop.set()
        if self._validator.is_alive():
            self._validator.join(timeout=60)
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=60)
        self._client.disconnect()
        self._client.loop_stop()
        for slot in self._slots:
            try:
                slot.conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection on the way out
                pass
        self._registry.close()

    def wait_idle(self, idle_s: float = 1.0, timeout_s: float = 600.0) -> None:
        """Block until no message arrived and nothing is queued for ``idle_s`` (or raise)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._error is not None:
                raise IngestError(f"ingest writer failed: {self._error}") from self._error
            with self._lock:
                quiet = time.monotonic() - self._last_activity
                busy = self._inflight
            if self._q.empty() and not busy and quiet >= idle_s:
                return
            time.sleep(min(0.1, idle_s / 4))
        raise IngestError(f"ingest still busy after {timeout_s:.0f}s")

    @property
    def error(self) -> BaseException | None:
        return self._error

    # --- paho callbacks: enqueue only ------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            why = refusal(reason_code)
            if why is None:
                log.error("broker refused the connection: %s", reason_code)
                return
            self._error = IngestError(f"broker {self._broker} refused {self.cfg.client_id}: {why}")
            if getattr(self, "_started", False):
                log.error("%s", self._error)
            client.disconnect()  # credentials or ACL: retrying cannot help
            return
        topic = f"$share/{SHARE_GROUP}/{SUBSCRIPTION}" if self.cfg.shared else SUBSCRIPTION
        if client.protocol == mqtt.MQTTv5:
            # Retained messages only when the subscription is new: resuming the persistent session (every
            # reconnect and restart) does not bring a retained message back (docs/store.md).
            client.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB))
        else:
            client.subscribe(topic, qos=1)  # MQTT 3.1.1 resends retained messages: the quarantine counts repeats

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties=None) -> None:  # type: ignore[no-untyped-def]
        if all(not rc.is_failure for rc in reason_codes):
            self._connected.set()  # subscribed: from now on the broker keeps our messages
        else:
            self._error = IngestError(f"broker {self._broker} refused the subscription of {self.cfg.client_id}: "
                                      f"{', '.join(str(rc) for rc in reason_codes)}")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:  # type: ignore[no-untyped-def]
        self._connected.clear()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:  # type: ignore[no-untyped-def]
        self._q.put(msg)
        with self._lock:
            self._last_activity = time.monotonic()

    # --- the writer thread -----------------------------------------------------------------
    def _connect_db(self, slot: _WriterSlot) -> None:
        for attempt in Retrying(retry=retry_if_exception_type((psycopg.OperationalError, psycopg.InterfaceError)),
                                wait=wait_exponential(multiplier=0.2, max=5), stop=stop_after_delay(self.cfg.db_retry_s),
                                reraise=True, before_sleep=self._log_db_retry("connecting to")):
            with attempt:
                conn = psycopg.connect(self.cfg.dsn, autocommit=True)
                slot.conn, slot.writer = conn, StoreWriter(conn)
                return
        raise AssertionError("unreachable")

    def _run_validator(self) -> None:
        number = 0
        try:
            while not (self._stop.is_set() and self._q.empty()) and self._error is None:
                self._registry.refresh()  # every registry_refresh_s: deactivations take effect within seconds
                batch = self._collect()
                if not batch:
                    continue
                with self._lock:
                    self._inflight += 1
                now_ms = int(time.time() * 1000)
                items = [(m.topic, m.payload) for m in batch]
                verdicts = validate_batch(items, self._registry.devices, now_ms, self.cfg.limits)  # type: ignore[arg-type]
                if any(getattr(v, "reason", None) == reasons.UNKNOWN_DEVICE for v in verdicts) \
                        and self._registry.refresh(force=True):  # provisioned since we loaded it?
                    verdicts = validate_batch(items, self._registry.devices, now_ms, self.cfg.limits)  # type: ignore[arg-type]
                prepared = prepare(*split_verdicts(verdicts), self._zstd, self._gate, now_ms)
                self._hand_over((number, batch, prepared, now_ms))
                number += 1
        except BaseException as exc:  # surfaced by wait_idle / the CLI; nothing is acked
            log.exception("validator stopped")
            self._error = exc
        finally:
            self._hand_over(None)

    def _hand_over(self, item: Ready | None) -> None:
        while self._error is None or item is None:
            try:
                self._ready.put(item, timeout=0.1)
                return
            except queue.Full:
                if not any(t.is_alive() for t in self._threads):
                    return  # the writers are gone (their error is recorded): nothing will take it

    def _run_writer(self, slot: _WriterSlot) -> None:
        try:
            while (item := self._ready.get()) is not None:
                self._write_with_retry(slot, *item)
                with self._lock:
                    self._inflight -= 1
            self._ready.put(None)  # the end: for the other writers too
        except BaseException as exc:  # surfaced by wait_idle / the CLI; nothing is acked
            log.exception("writer stopped")
            self._error = exc
            with self._ack_turn:
                self._ack_turn.notify_all()

    def _collect(self) -> list[mqtt.MQTTMessage]:
        batch: list[mqtt.MQTTMessage] = []
        try:
            batch.append(self._q.get(timeout=0.1))
        except queue.Empty:
            return batch
        deadline = time.monotonic() + self.cfg.batch_ms / 1000
        while len(batch) < self.cfg.batch_frames:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._q.get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _write_with_retry(self, slot: _WriterSlot, number: int, batch: list[mqtt.MQTTMessage],
                          prepared: Prepared, now_ms: int) -> None:
        m = self.metrics
        job = BatchWrite(prepared, self.cfg.store_attempts)  # resumable: a reconnect goes on where it stopped
        # What escapes the job is a lost connection (or a store refusing even quarantine rows): wait it out.
        for attempt in Retrying(retry=retry_if_exception_type(psycopg.Error),
                                wait=wait_exponential(multiplier=0.2, max=5), stop=stop_after_delay(self.cfg.db_retry_s),
                                reraise=True,
                                before_sleep=lambda rs: (self._log_db_retry("writing a batch to")(rs),
                                                         self._reconnect_db(slot))):
            with attempt:
                t0 = time.perf_counter()
                result = job.run(slot.writer)
                m.commit_seconds.observe(time.perf_counter() - t0)
        if job.refused:
            m.store_refusals.inc(job.refused)
            log.warning("the store refused %d parts of a batch of %d messages; quarantined store_failed: %d",
                        job.refused, len(batch), result.quarantined.get(reasons.STORE_FAILED, 0))
        # Committed: now, and only now — and after every earlier batch — acknowledge.
        with self._ack_turn:
            while self._next_ack != number:
                if self._error is not None:
                    raise IngestError("another writer failed: its batch stays unacknowledged, so this one does too")
                self._ack_turn.wait(timeout=0.5)
            for msg in batch:
                self._client.ack(msg.mid, msg.qos)
            self._next_ack += 1
            self._ack_turn.notify_all()
        m.received.inc(len(batch))
        m.accepted.inc(result.frames_accepted)
        m.duplicates.inc(result.frames_duplicate)
        m.readings.inc(result.readings_written)
        for reason, n in result.quarantined.items():
            m.quarantined.labels(reason).inc(n)
        for reason, n in result.dropped.items():
            m.dropped.labels(reason).inc(n)
        m.queue_depth.set(self._q.qsize())
        if prepared.frames:
            m.lag_seconds.set(max(0.0, (now_ms - prepared.frames[-1][0].frame.sent_ms) / 1000))
        with self._lock:
            self.totals.add(result)
            self._last_activity = time.monotonic()

    def _log_db_retry(self, what: str) -> Callable[[RetryCallState], None]:
        """A tenacity ``before_sleep`` that says what is retried, where (never the password), why, and when."""
        def log_retry(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            why = " ".join(redact(str(exc), self.cfg.dsn).split()).removeprefix("connection failed: ") if exc else "?"
            wait = rs.next_action.sleep if rs.next_action else 0.0
            log.warning("%s the database at %s failed: %s; retry %d in %.1fs (giving up after %.0fs)",
                        what, dsn_location(self.cfg.dsn), why, rs.attempt_number, wait, self.cfg.db_retry_s)
        return log_retry

    def _reconnect_db(self, slot: _WriterSlot) -> None:
        log.warning("database connection to %s lost; reconnecting", dsn_location(self.cfg.dsn))
        try:
            slot.conn.close()
        except Exception:  # noqa: BLE001
            pass
        try:
            slot.conn = psycopg.connect(self.cfg.dsn, autocommit=True)
            slot.writer = StoreWriter(slot.conn)
        except psycopg.OperationalError:
            pass  # the next attempt fails the same way and backs off again


class _WriterSlot:
    """One writer thread's connection and writer (neither is shared between threads)."""

    conn: psycopg.Connection[Any]
    writer: StoreWriter


def quarantine_counts(totals: BatchResult) -> Counter[str]:
    return Counter(totals.quarantined)

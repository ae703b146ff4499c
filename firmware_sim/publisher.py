"""MQTT publishing for a device: paho-mqtt 2.x, MQTT 5, QoS 1, persistent session, offline spool.

Owns: one device's connection (client id = device id), its retained status topic and last will,
and moving frames from the spool to the broker. Lifecycle: ``start()`` (connect in the
background; paho reconnects with exponential backoff by itself), ``publish(items)`` (spool first,
then hand to MQTT as the in-flight window allows), ``flush(timeout)`` (wait for every PUBACK),
``close()``.

Delivery contract: a frame leaves the spool only when the broker has acknowledged it (PUBACK).
While disconnected, frames accumulate in the spool; paho re-sends what was in flight after a
reconnect, and a new process re-sends whatever is still spooled, oldest first. Redelivery is safe
because ingest treats an identical (device, seq) frame as a no-op.
Must not: build or sign frames.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from urllib.parse import urlparse

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware_sim.spool import Spool
from firmware_sim.wire import StatusMessage


class PublishError(RuntimeError):
    """The broker could not be reached or did not acknowledge in time."""


def parse_broker_url(url: str) -> tuple[str, int]:
    u = urlparse(url if "://" in url else f"mqtt://{url}")
    if u.scheme not in ("mqtt", "tcp") or not u.hostname:
        raise PublishError(f"broker URL {url!r} must look like mqtt://host:port")
    return u.hostname, u.port or 1883


class Publisher:
    def __init__(self, broker_url: str, client_id: str, spool: Spool, *, status_topic: str | None = None,
                 protocol: int = 5, window: int = 500, keepalive_s: int = 30) -> None:
        self.host, self.port = parse_broker_url(broker_url)
        self.client_id = client_id
        self.spool = spool
        self.status_topic = status_topic
        self.window = window
        self._cv = threading.Condition()
        self._inflight: dict[int, int] = {}  # mid → spool id
        self._acked: list[int] = []
        self._early: set[int] = set()  # mids acknowledged before _pump recorded them
        self._pump_lock = threading.Lock()
        self._last_handed = 0
        self._connected = False
        self.acked_total = 0
        proto = mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311
        kwargs = {} if proto == mqtt.MQTTv5 else {"clean_session": False}
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto, **kwargs)
        self._proto = proto
        self._keepalive = keepalive_s
        self._client.max_inflight_messages_set(window)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        if status_topic:
            self._client.will_set(status_topic, self._status("offline"), qos=1, retain=True)

    def _status(self, state: str) -> bytes:
        return msgspec.json.encode(StatusMessage(v=1, device=self.client_id, state=state,  # type: ignore[arg-type]
                                                 ts_ms=int(time.time() * 1000)))

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> Publisher:
        props = None
        if self._proto == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            self._client.connect_async(self.host, self.port, self._keepalive, clean_start=False, properties=props)
        else:
            self._client.connect_async(self.host, self.port, self._keepalive)
        self._client.loop_start()
        return self

    def wait_connected(self, timeout_s: float = 10.0) -> None:
        with self._cv:
            if not self._cv.wait_for(lambda: self._connected, timeout_s):
                raise PublishError(f"{self.client_id}: no connection to {self.host}:{self.port} after {timeout_s:.0f}s")

    def close(self, timeout_s: float = 10.0) -> None:
        try:
            if self._connected and self.status_topic:
                self._client.publish(self.status_topic, self._status("offline"), qos=1, retain=True).wait_for_publish(timeout_s)
        except (RuntimeError, ValueError):
            pass
        self._client.disconnect()
        self._client.loop_stop()
        self._flush_acks()

    def __enter__(self) -> Publisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- publishing ------------------------------------------------------------------------
    def publish(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Spool ``items`` (durably), then hand as many as the window allows to MQTT."""
        if items:
            self.spool.put_many(items)
        self._pump()

    def flush(self, timeout_s: float = 60.0) -> None:
        """Block until everything spooled is acknowledged by the broker."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._pump()
            with self._cv:
                idle = not self._inflight
            if idle and not self.spool.after(self._last_handed, 1):
                self._flush_acks()
                if self.spool.count() == 0:
                    return
                self._last_handed = 0  # acked rows are gone; anything left was never handed (reconnect)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishError(f"{self.client_id}: {self.spool.count()} frames not acknowledged after {timeout_s:.0f}s")
            with self._cv:  # woken when the in-flight window has drained to half (see _on_publish)
                self._cv.wait(min(remaining, 0.05))
            self._flush_acks()

    def pending(self) -> int:
        return self.spool.count()

    def _pump(self) -> None:
        # paho holds its own locks while running callbacks, so never call into paho while
        # holding ``_cv`` (on_publish takes ``_cv``): that is a lock-order deadlock.
        if not self._pump_lock.acquire(blocking=False):
            return  # another thread is pumping; it will pick these rows up
        try:
            with self._cv:
                room = self.window - len(self._inflight)
                last = self._last_handed
                if not self._connected or room <= 0:
                    return
            for sid, topic, payload in self.spool.after(last, room):
                if not self._connected:
                    return
                info = self._client.publish(topic, payload, qos=1)
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    return
                with self._cv:
                    self._last_handed = sid
                    if info.mid in self._early:  # PUBACK beat us here
                        self._early.discard(info.mid)
                        self._acked.append(sid)
                        self.acked_total += 1
                    else:
                        self._inflight[info.mid] = sid
        finally:
            self._pump_lock.release()
        if len(self._acked) > 256:
            self._flush_acks()

    def _flush_acks(self) -> None:
        with self._cv:
            acked, self._acked = self._acked, []
        self.spool.delete(acked)

    # --- paho callbacks (network thread): record and wake, little else ----------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            return
        with self._cv:
            self._connected = True
            self._cv.notify_all()
        if self.status_topic:
            client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
        threading.Thread(target=self._pump, daemon=True).start()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:  # type: ignore[no-untyped-def]
        with self._cv:
            self._connected = False
            self._cv.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties=None) -> None:  # type: ignore[no-untyped-def]
        with self._cv:
            sid = self._inflight.pop(mid, None)
            if sid is None:
                self._early.add(mid)
            else:
                self._acked.append(sid)
                self.acked_total += 1
            if len(self._inflight) <= self.window // 2:
                self._cv.notify_all()

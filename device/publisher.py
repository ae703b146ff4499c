"""MQTT publishing for a device: paho-mqtt 2.x, MQTT 5, QoS 1, persistent session, offline spool.

Owns: one device's connection (client id = device id; credentials from the broker URL
``mqtt://user:password@host:port`` or options; TLS for ``mqtts://`` with a CA and a client
certificate, through paho's ``tls_set``: see ``broker_address``), its retained status topic and last
will, and moving frames from the spool to the broker. Lifecycle: ``start()`` (connect in the
background; paho reconnects with exponential backoff by itself), ``publish(items)`` (spool first,
then hand to MQTT as the in-flight window allows), ``flush(timeout)`` (wait for every PUBACK),
``close()``.

Sequence numbers: ``publish(items, seq=...)`` persists the seq with the spooled rows, fsync'ed in
blocks, before the frames are handed to paho, so a killed device never reuses one (``Spool``).
Refusals: a CONNACK refusing the credentials ("Not authorized", "Bad user name or password"), a TLS
handshake where the broker refuses our certificate (unknown CA, revoked, expired…) or we refuse its
(``tls_refusal``), or a PUBACK refusing a publish (MQTT 5 ACL) is not retried: it is logged, counted
(``refused_total``) and ``BrokerRefused`` names the broker and the reason from
``wait_connected``/``publish``/``flush``.

Delivery contract: a frame leaves the spool only when the broker has acknowledged it (PUBACK).
While disconnected, frames accumulate in the spool; paho re-sends what was in flight after a
reconnect, and a new process re-sends whatever is still spooled, oldest first. Redelivery is safe
because ingest treats an identical (device, seq) frame as a no-op.
Must not: build or sign frames.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.errors import BrokerUnavailable, WattproofError, tcp_problem
from device.spool import Spool
from device.wire import StatusMessage

log = logging.getLogger("wattproof.device")
log.addHandler(logging.NullHandler())  # a library: the application decides where refusals are logged


class PublishError(WattproofError, RuntimeError):
    """The broker could not be reached or did not acknowledge in time."""


class BrokerUnreachable(PublishError, BrokerUnavailable):
    """No connection to the broker (nothing listening, unreachable host, or no CONNACK in time)."""


class BrokerRefused(PublishError):
    """The broker refused the connection (CONNACK) or a publish (PUBACK): credentials or ACL."""


DEVICE_PLACEHOLDER = "{device}"


@dataclass(frozen=True)
class BrokerAddress:
    """Where a broker is and what to present: ``mqtt[s]://user:password@host:port``, and for ``mqtts``
    the CA to trust (default: the system's) and a client certificate and key (``broker_address``)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def __str__(self) -> str:  # for messages: never the password
        user = f"{quote(self.username, safe='')}@" if self.username is not None else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    def for_client(self, client_id: str) -> BrokerAddress:
        """This address with ``{device}`` in the certificate and key paths replaced by ``client_id``: one
        certificate per device of a fleet (``--mqtt-cert 'pki/clients/{device}.crt'``)."""
        if not any(f and DEVICE_PLACEHOLDER in f for f in (self.cert, self.key)):
            return self
        return dataclasses.replace(self, cert=self.cert and self.cert.replace(DEVICE_PLACEHOLDER, client_id),
                                   key=self.key and self.key.replace(DEVICE_PLACEHOLDER, client_id))

    def apply(self, client: mqtt.Client) -> None:
        """Present the credentials (if any) and set up TLS (paho's ``tls_set``) when ``client`` connects."""
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            try:  # certificate verification and host name check on (paho's defaults with CERT_REQUIRED)
                client.tls_set(ca_certs=self.ca, certfile=self.cert, keyfile=self.key, cert_reqs=ssl.CERT_REQUIRED,
                               tls_version=ssl.PROTOCOL_TLS_CLIENT)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: unreadable or mismatched files
                files = ", ".join(f for f in (self.ca, self.cert, self.key) if f)
                raise PublishError(f"TLS setup for {self} failed ({files}): {exc}") from exc


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt[s]://[user[:password]@]host[:port]`` (user and password percent-decoded; port 1883, or
    8883 for ``mqtts``; ``tcp``/``ssl`` are accepted as their aliases)."""
    u = urlparse(url if "://" in url else f"mqtt://{url}")
    tls = u.scheme in ("mqtts", "ssl")
    try:
        port = u.port or (8883 if tls else 1883)
    except ValueError:
        port = 0
    if u.scheme not in ("mqtt", "tcp", "mqtts", "ssl") or not u.hostname or not port or u.path not in ("", "/") or u.query:
        raise PublishError(f"broker URL {_redact(url)!r} must look like mqtt://host:port, mqtts://host:port "
                           "or mqtt://user:password@host:port")
    user = unquote(u.username) if u.username is not None else None
    password = unquote(u.password) if u.password is not None else None
    return BrokerAddress(u.hostname, port, user, password, tls=tls)


def broker_address(url: str | BrokerAddress, *, ca: str | Path | None = None, cert: str | Path | None = None,
                   key: str | Path | None = None, username: str | None = None,
                   password: str | None = None) -> BrokerAddress:
    """The address of ``url`` with these options over what the URL says (what the CLI's ``--mqtt-*``
    options and ``WATTPROOF_MQTT_*`` variables give). A CA or certificate needs an ``mqtts://`` URL;
    a key needs a certificate; every file must exist: otherwise one clear ``PublishError``. ``{device}`` in
    the certificate and key paths stands for each publisher's client id (``BrokerAddress.for_client``)."""
    addr = parse_broker_url(url) if isinstance(url, str) else url
    if ca is not None or cert is not None or key is not None:
        if not addr.tls:
            raise PublishError(f"a CA or client certificate needs an mqtts:// broker URL, not {addr}")
    if key is not None and cert is None and addr.cert is None:
        raise PublishError("a client key needs its certificate (--mqtt-cert / WATTPROOF_MQTT_CERT)")
    for what, path in (("CA", ca), ("client certificate", cert), ("client key", key)):
        if path is not None and DEVICE_PLACEHOLDER not in str(path) and not Path(path).is_file():
            raise PublishError(f"{what} file {path} not found")
    changes = {k: str(v) for k, v in (("ca", ca), ("cert", cert), ("key", key)) if v is not None}
    changes.update({k: v for k, v in (("username", username), ("password", password)) if v is not None})
    return dataclasses.replace(addr, **changes) if changes else addr  # type: ignore[arg-type]


def _redact(url: str) -> str:
    return re.sub(r"^([^:/@]*://[^:/@]*):[^@]*@", r"\1:***@", url)


# CONNACK reasons that retrying cannot fix (MQTT 5 reason codes; paho maps 3.1.1 return codes 1, 2, 4,
# 5 to 0x84, 0x85, 0x86, 0x87): unsupported protocol, client id not valid, bad user name or password,
# not authorized, banned, bad authentication method.
REFUSALS = {0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C}


def refusal(reason_code: object) -> str | None:
    """The reason (e.g. "Not authorized") if a failed CONNACK means "do not retry", else None."""
    return str(reason_code) if getattr(reason_code, "value", None) in REFUSALS else None


# TLS alerts by which a broker refuses our client certificate (OpenSSL reason names): retrying cannot help.
TLS_REFUSAL_ALERTS = ("UNKNOWN_CA", "CERTIFICATE_REVOKED", "BAD_CERTIFICATE", "CERTIFICATE_EXPIRED",
                      "CERTIFICATE_UNKNOWN", "CERTIFICATE_REQUIRED", "UNSUPPORTED_CERTIFICATE", "ACCESS_DENIED",
                      "DECRYPT_ERROR")


def tls_refusal(exc: BaseException | None) -> str | None:
    """The reason if a TLS error means "do not retry": the broker refused our certificate (an alert
    above), or its certificate is not one we trust (verification failed). Else None (e.g. a reset)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate is not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.CertificateError):  # paho's own host name check
        return f"TLS: the broker's certificate is not trusted ({exc})"
    reason = getattr(exc, "reason", None) if isinstance(exc, ssl.SSLError) else None
    if isinstance(reason, str) and any(reason.endswith(alert) for alert in TLS_REFUSAL_ALERTS):
        alert = reason.split("ALERT_", 1)[-1].lower().replace("_", " ")
        if alert == "certificate required":
            return "TLS: the broker requires a client certificate"
        return f"TLS: the broker refused our certificate ({alert})"
    return None


def watch_tls_refusals(client: mqtt.Client, on_refused: Callable[[str], None]) -> None:
    """Call ``on_refused(reason)`` (on paho's thread) when a connection attempt of ``client`` fails by a
    TLS refusal (``tls_refusal``). paho retries a failed connection forever and only logs why (a handshake
    error goes to ``on_connect_fail``, an alert read after the handshake — TLS 1.3 — to ``on_log``); both
    run inside paho's ``except`` block, where ``sys.exc_info()`` is that error."""
    def check(*_: object) -> None:
        why = tls_refusal(sys.exc_info()[1])
        if why is not None:
            on_refused(why)

    client.on_connect_fail = check
    client.on_log = lambda c, u, level, buf: check() if level == mqtt.MQTT_LOG_ERR else None


class Publisher:
    def __init__(self, broker_url: str | BrokerAddress, client_id: str, spool: Spool, *, status_topic: str | None = None,
                 protocol: int = 5, window: int = 500, keepalive_s: int = 30) -> None:
        self.address = broker_address(broker_url).for_client(client_id)
        self.host, self.port = self.address.host, self.address.port
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
        self._refused: str | None = None  # set when the broker refuses us: no retry, every call raises
        self.acked_total = 0
        self.refused_total = 0  # refusals by the broker (connection, TLS, PUBACK): each logged, none retried
        proto = mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311
        kwargs = {} if proto == mqtt.MQTTv5 else {"clean_session": False}
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto, **kwargs)
        self._proto = proto
        self._keepalive = keepalive_s
        self.address.apply(self._client)
        watch_tls_refusals(self._client, self._refuse_connection)
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
            if not self._cv.wait_for(lambda: self._connected or self._refused is not None, timeout_s):
                why = tcp_problem(self.host, self.port) or (
                    f"no connection after {timeout_s:.0f}s (the port answers TCP: TLS or protocol mismatch?)")
                raise BrokerUnreachable(f"broker at {self.address} unreachable: {why} (client {self.client_id})")
        self._raise_if_refused()

    def _raise_if_refused(self) -> None:
        if self._refused is not None:
            raise BrokerRefused(self._refused)

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
    def publish(self, items: Sequence[tuple[str, bytes]], seq: int | None = None, last_ts_ms: int | None = None) -> None:
        """Spool ``items`` (durably), then hand as many as the window allows to MQTT.

        ``seq``: the highest sequence number among ``items``. It is persisted (a block reserved and
        fsync'ed when needed, see ``Spool``) in the commit that spools them, so before any of them
        leaves the process: a device killed at any instant never reuses a seq (DESIGN: invariant 8).
        ``last_ts_ms``: their latest reading time (where a restarted simulator continues)."""
        self._raise_if_refused()
        if items:
            self.spool.put_many(items, seq=seq, last_ts_ms=last_ts_ms)
        self._pump()

    def flush(self, timeout_s: float = 60.0) -> None:
        """Block until everything spooled is acknowledged by the broker."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._raise_if_refused()
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
                if not self._connected or room <= 0 or self._refused is not None:
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
    def _refuse(self, message: str) -> None:
        with self._cv:
            self.refused_total += 1
            first = self._refused is None
        # the first refusal at ERROR; the rest of a refused window (up to ``window`` PUBACKs) at DEBUG.
        # Logged before the waiting caller is woken, so its error never overtakes the log line.
        log.log(logging.ERROR if first else logging.DEBUG, "%s (not retried)", message)
        with self._cv:
            self._refused = self._refused or message
            self._cv.notify_all()

    def _refuse_connection(self, why: str) -> None:
        self._refuse(f"broker {self.address} refused {self.client_id}: {why}")
        self._client.disconnect()  # stops paho's reconnect loop

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            why = refusal(reason_code)
            if why is not None:  # retrying cannot help: stop, and let the caller say why
                self._refuse_connection(why)
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
        if reason_code.is_failure:  # MQTT 5 PUBACK "Not authorized" etc.: the frame stays spooled
            with self._cv:
                self._inflight.pop(mid, None)
            self._refuse(f"broker {self.address} refused a publish of {self.client_id}: {reason_code}")
            return
        with self._cv:
            sid = self._inflight.pop(mid, None)
            if sid is None:
                self._early.add(mid)
            else:
                self._acked.append(sid)
                self.acked_total += 1
            if len(self._inflight) <= self.window // 2:
                self._cv.notify_all()

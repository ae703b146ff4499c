"""The embedded broker (DESIGN invariant 7, broker part): it listens on loopback only and refuses
anonymous clients; each role gets its own credentials and may do only its own job. Run against the
real Mosquitto (and the amqtt fallback), with real clients; a refusal is one clear error, not a retry.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from device.publisher import (
    BrokerAddress,
    BrokerRefused,
    Publisher,
    PublishError,
    parse_broker_url,
)
from device.spool import Spool
from device.wire import readings_topic
from firmware_sim.sim import simulate
from ingest.service import IngestConfig, IngestError, IngestService
from tests.fixtures_ingest import expected_rows, provision, publish_run, stored, wait_for_rows
from wattproof import embedded
from wattproof.embedded import Broker, mosquitto_password_hash

PROTOCOL = {"mosquitto": 5, "amqtt": 4}


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A Mosquitto as the demo runs it: loopback, no anonymous clients, users ingest and devices."""
    broker = Broker(tmp_path_factory.mktemp("auth-mosquitto"), auth=True).start()
    assert broker.kind == "mosquitto"
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def auth_amqtt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The amqtt fallback broker with the same credentials and ACL."""
    broker = Broker(tmp_path_factory.mktemp("auth-amqtt"), auth=True).start(prefer="amqtt")
    assert broker.kind == "amqtt"
    yield broker
    broker.stop()


class Client:
    """A raw paho client recording what the broker answers and delivers."""

    def __init__(self, url: str, client_id: str, protocol: int = 5) -> None:
        self.addr = parse_broker_url(url)
        self.connack: str | None = None
        self.subacks: list[list[str]] = []
        self.pubacks: dict[int, str] = {}
        self.messages: list[bytes] = []
        self.cv = threading.Condition()
        proto = mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto)
        self.addr.apply(self.client)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.connect(self.addr.host, self.addr.port)
        self.client.loop_start()
        self.wait(lambda: self.connack is not None)

    def _on_connect(self, c, u, flags, rc, props=None) -> None:  # type: ignore[no-untyped-def]
        with self.cv:
            self.connack = str(rc)
            self.cv.notify_all()
        if rc.is_failure:
            c.disconnect()

    def _on_subscribe(self, c, u, mid, rcs, props=None) -> None:  # type: ignore[no-untyped-def]
        with self.cv:
            self.subacks.append([str(r) for r in rcs])
            self.cv.notify_all()

    def _on_publish(self, c, u, mid, rc, props=None) -> None:  # type: ignore[no-untyped-def]
        with self.cv:
            self.pubacks[mid] = str(rc)
            self.cv.notify_all()

    def _on_message(self, c, u, msg) -> None:  # type: ignore[no-untyped-def]
        with self.cv:
            self.messages.append(msg.payload)
            self.cv.notify_all()

    def wait(self, cond, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
        with self.cv:
            assert self.cv.wait_for(cond, timeout_s), "the broker did not answer in time"

    def subscribe(self, topic: str) -> list[str]:
        n = len(self.subacks)
        self.client.subscribe(topic, qos=1)
        self.wait(lambda: len(self.subacks) > n)
        return self.subacks[n]

    def publish(self, topic: str, payload: bytes) -> str:
        info = self.client.publish(topic, payload, qos=1)
        self.wait(lambda: info.mid in self.pubacks)
        return self.pubacks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A = LISTEN
                found.add(addr)
    return found


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_embedded_broker_listens_on_loopback_only(kind: str, auth_broker: Broker, auth_amqtt: Broker) -> None:
    broker = auth_broker if kind == "mosquitto" else auth_amqtt
    assert listening_addresses(broker.port) == {"0100007F"}  # 127.0.0.1, nothing on 0.0.0.0 or ::


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_anonymous_client_is_refused_with_one_clear_error(kind: str, auth_broker: Broker, auth_amqtt: Broker,
                                                          tmp_path: Path) -> None:
    broker = auth_broker if kind == "mosquitto" else auth_amqtt
    pub = Publisher(broker.url, "anon-dev", Spool(tmp_path / "a.sqlite"), protocol=PROTOCOL[kind]).start()
    try:
        t0 = time.monotonic()
        with pytest.raises(BrokerRefused) as err:
            pub.wait_connected(30)
        assert time.monotonic() - t0 < 10  # refused at once, not retried until the timeout
        assert str(err.value) == f"broker mqtt://127.0.0.1:{broker.port} refused anon-dev: Not authorized"
        with pytest.raises(BrokerRefused):
            pub.publish([("wattproof/v1/s/anon-dev/readings", b"{}")])
    finally:
        pub.close()


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_wrong_password_is_refused_and_the_error_does_not_show_it(kind: str, auth_broker: Broker, auth_amqtt: Broker,
                                                                  tmp_path: Path) -> None:
    broker = auth_broker if kind == "mosquitto" else auth_amqtt
    url = f"mqtt://devices:not-the-password@127.0.0.1:{broker.port}"
    pub = Publisher(url, "dev-wrong-pw", Spool(tmp_path / "w.sqlite"), protocol=PROTOCOL[kind]).start()
    try:
        with pytest.raises(BrokerRefused) as err:
            pub.wait_connected(30)
        msg = str(err.value)
        assert msg.startswith(f"broker mqtt://devices@127.0.0.1:{broker.port} refused dev-wrong-pw: ")
        assert msg.endswith(("Not authorized", "Bad user name or password"))
        assert "not-the-password" not in msg
    finally:
        pub.close()
    # the ingest role's password is not the devices role's either
    other = Client(broker.url_for("ingest").replace("//ingest:", "//devices:"), "dev-swapped", PROTOCOL[kind])
    assert other.connack in ("Not authorized", "Bad user name or password")
    other.close()


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_devices_user_subscribed_to_everything_receives_nothing(kind: str, auth_broker: Broker,
                                                                auth_amqtt: Broker) -> None:
    broker = auth_broker if kind == "mosquitto" else auth_amqtt
    proto = PROTOCOL[kind]
    ingest = Client(broker.url_for("ingest"), f"ing-spy-{kind}", proto)
    spy = Client(broker.url_for("devices"), f"dev-spy-{kind}", proto)
    sender = Client(broker.url_for("devices"), f"dev-send-{kind}", proto)
    try:
        assert ingest.subscribe("wattproof/v1/+/+/readings") == ["Granted QoS 1"]
        # Mosquitto grants the subscription and then delivers nothing (read ACL); amqtt refuses it.
        assert spy.subscribe("#")[0] in ("Granted QoS 1", "Unspecified error", "Not authorized")
        assert spy.subscribe("wattproof/v1/#")[0] in ("Granted QoS 1", "Unspecified error", "Not authorized")
        assert sender.publish(readings_topic("s1", f"dev-send-{kind}"), b"frame-1") == "Success"
        ingest.wait(lambda: b"frame-1" in ingest.messages)  # delivered to ingest, so past the spy too
        assert spy.messages == []
    finally:
        for c in (ingest, spy, sender):
            c.close()


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_ingest_user_cannot_publish_readings(kind: str, auth_broker: Broker, auth_amqtt: Broker) -> None:
    broker = auth_broker if kind == "mosquitto" else auth_amqtt
    proto = PROTOCOL[kind]
    watcher = Client(broker.url_for("ingest"), f"ing-watch-{kind}", proto)
    ingest = Client(broker.url_for("ingest"), f"ing-forge-{kind}", proto)
    device = Client(broker.url_for("devices"), f"dev-mark-{kind}", proto)
    try:
        assert watcher.subscribe("wattproof/v1/#") == ["Granted QoS 1"]
        answer = ingest.publish(readings_topic("s1", "s1-main"), b"forged-by-ingest")
        # MQTT 5 (Mosquitto) says so in the PUBACK; MQTT 3.1.1 has no way to, the broker drops it
        assert answer == ("Not authorized" if proto == 5 else "Success")
        assert device.publish(readings_topic("s1", f"dev-mark-{kind}"), b"marker") == "Success"
        watcher.wait(lambda: b"marker" in watcher.messages)
        assert b"forged-by-ingest" not in watcher.messages
    finally:
        for c in (watcher, ingest, device):
            c.close()


def test_publisher_refused_a_publish_by_the_acl_keeps_the_frame_and_says_so(auth_broker: Broker,
                                                                            tmp_path: Path) -> None:
    spool = Spool(tmp_path / "acl.sqlite")
    pub = Publisher(auth_broker.url_for("ingest"), "ing-as-device", spool).start()  # wrong role for publishing
    try:
        pub.wait_connected()
        pub.publish([(readings_topic("s1", "s1-main"), b"frame")], seq=1)
        with pytest.raises(BrokerRefused, match=r"refused a publish of ing-as-device: Not authorized"):
            pub.flush(30)
        assert spool.count() == 1  # not acknowledged, so not dropped
    finally:
        pub.close()


def test_ingest_service_with_the_wrong_credentials_fails_at_once(auth_broker: Broker, store_db: str) -> None:
    svc = IngestService(IngestConfig(auth_broker.url, store_db, client_id="ingest-anon"))
    t0 = time.monotonic()
    with pytest.raises(IngestError) as err:
        svc.start(timeout_s=30)
    assert time.monotonic() - t0 < 10
    assert str(err.value) == f"broker mqtt://127.0.0.1:{auth_broker.port} refused ingest-anon: Not authorized"


def test_cli_refused_by_the_broker_exits_with_one_line(auth_broker: Broker, store_db: str, tmp_path: Path) -> None:
    env = {**os.environ, "WATTPROOF_HOME": str(tmp_path / "home")}
    bad = f"mqtt://ingest:wrong@127.0.0.1:{auth_broker.port}"
    for args, who in [(["ingest", "--broker", bad, "--db", store_db], "wattproof-ingest"),
                      (["simulate", "--broker", auth_broker.url, "--sites", "1", "--days", "0.01"], "s01-")]:
        res = subprocess.run([sys.executable, "-m", "wattproof", *args], capture_output=True, text=True, env=env,
                             timeout=120)
        assert res.returncode == 1, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        assert lines[0].startswith("error: broker mqtt://")
        assert f"127.0.0.1:{auth_broker.port} refused {who}" in lines[0]
        assert lines[0].endswith("Not authorized") and "wrong" not in lines[0]


def test_demo_roles_carry_the_pipeline_end_to_end(auth_broker: Broker, store_db: str, tmp_path: Path) -> None:
    """Ingest (its own user, MQTT 5 shared subscription) stores what the devices user publishes."""
    run = simulate(sites=1, days=0.25, seed=11)
    provision(store_db, run)
    want, _ = expected_rows(run)
    svc = IngestService(IngestConfig(auth_broker.url_for("ingest"), store_db, client_id="ingest-roles",
                                     shared=True)).start()
    try:
        publish_run(auth_broker.url_for("devices"), run, tmp_path / "spool")
        wait_for_rows(store_db, want)
        svc.wait_idle(idle_s=0.5)
    finally:
        svc.stop()
    n, distinct, reasons = stored(store_db)
    assert n == distinct == want and reasons == {}


def test_broker_url_credentials_are_percent_decoded_and_never_shown() -> None:
    addr = parse_broker_url("mqtt://us%40er:p%3Aw%2Fd%25@broker.example:1884")
    assert addr == BrokerAddress("broker.example", 1884, "us@er", "p:w/d%")
    assert "p:w/d" not in repr(addr) and str(addr) == "mqtt://us%40er@broker.example:1884"
    assert parse_broker_url("mqtt://host") == BrokerAddress("host", 1883)
    assert parse_broker_url("tcp://u@host:1") == BrokerAddress("host", 1, "u", None)
    for bad in ("http://u:secret@host:1", "mqtt://u:secret@:1", "mqtt://u:secret@host:99999", "mqtt://host:1/x"):
        with pytest.raises(PublishError) as err:
            parse_broker_url(bad)
        assert "must look like mqtt://host:port" in str(err.value) and "secret" not in str(err.value)


def test_passwords_with_url_special_characters_work_end_to_end(tmp_path: Path) -> None:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    (workdir / "credentials.json").write_text(json.dumps({"ingest": "i:n/g@e%s t", "devices": "d#e?v:i/c@e%s"}))
    with Broker(workdir, auth=True).start() as broker:
        assert "%" in broker.url_for("devices")
        device = Client(broker.url_for("devices"), "dev-special")
        assert device.connack == "Success"
        device.close()


def test_password_file_written_without_mosquitto_passwd_is_what_mosquitto_expects(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = embedded.find_mosquitto_passwd()
    assert tool is not None
    subprocess.run([tool, "-c", "-b", str(tmp_path / "pw"), "u", "s3cret"], check=True)
    entry = (tmp_path / "pw").read_text().strip().split(":", 1)[1]
    salt = entry.split("$")[3]
    assert mosquitto_password_hash("s3cret", base64.b64decode(salt)) == entry  # same hash as the tool
    monkeypatch.setattr(embedded, "find_mosquitto_passwd", lambda: None)  # as on a machine without the tool
    with Broker(tmp_path / "broker", auth=True).start() as broker:
        good = Client(broker.url_for("devices"), "dev-fallback")
        bad = Client(f"mqtt://devices:nope@127.0.0.1:{broker.port}", "dev-fallback-bad")
        assert (good.connack, bad.connack) == ("Success", "Not authorized")
        good.close()
        bad.close()
    assert oct((tmp_path / "broker" / "passwd").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "broker" / "credentials.json").stat().st_mode & 0o777) == "0o600"


def test_credentials_survive_a_broker_restart(tmp_path: Path) -> None:
    with Broker(tmp_path / "b", auth=True).start() as broker:
        url = broker.url_for("devices")
        broker.restart()
        c = Client(url, "dev-after-restart")
        assert c.connack == "Success"
        c.close()

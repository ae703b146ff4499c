"""The locked-down broker (issue 15, docs/broker.md): TLS with the project's CA, a client certificate per
identity (CN = MQTT username), no anonymous clients, a CRL, and an ACL where a device publishes only to
its own topics and ingest only reads. Run against a real Mosquitto started with ``wattproof.pki``'s
configuration on its own loopback port, with real clients; every refusal is tried as an attacker would.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from device.publisher import (
    BrokerAddress,
    BrokerRefused,
    Publisher,
    PublishError,
    broker_address,
    parse_broker_url,
)
from device.spool import Spool
from device.wire import readings_topic, status_topic
from firmware_sim.sim import simulate
from ingest import reasons
from ingest.service import IngestConfig, IngestError, IngestService
from tests.fixtures_ingest import (
    expected_rows,
    provision,
    publish_run,
    stored,
    wait_for_rows,
    wait_until,
)
from wattproof import pki
from wattproof.embedded import Broker, find_mosquitto, free_port, wait_for_port


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Mosquitto with the generated TLS configuration, its PKI in a temp dir, on its own 127.0.0.1 port."""
    base = tmp_path_factory.mktemp("tls-broker")
    broker = Broker(base / "broker", tls=base / "pki").start()
    assert broker.kind == "mosquitto" and broker.url.startswith("mqtts://127.0.0.1:")
    yield broker
    broker.stop()


class Client:
    """A raw paho client (MQTT 5) recording what the broker answers and delivers."""

    def __init__(self, addr: BrokerAddress, client_id: str) -> None:
        self.connack: str | None = None
        self.subacks: list[list[str]] = []
        self.pubacks: dict[int, str] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.cv = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        addr.apply(self.client)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, rcs, p=None: self._record(self.subacks.append, [str(r) for r in rcs])
        self.client.on_publish = lambda c, u, mid, rc, p=None: self._record(self.pubacks.__setitem__, mid, str(rc))
        self.client.on_message = lambda c, u, msg: self._record(self.messages.append, (msg.topic, msg.payload))
        self.client.connect(addr.host, addr.port)
        self.client.loop_start()
        self.wait(lambda: self.connack is not None)

    def _record(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        with self.cv:
            fn(*args)
            self.cv.notify_all()

    def _on_connect(self, c, u, flags, rc, props=None) -> None:  # type: ignore[no-untyped-def]
        with self.cv:
            self.connack = str(rc)
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


def refusal_of(addr: BrokerAddress, client_id: str, tmp_path: Path) -> str:
    """Connect a Publisher; the one-line refusal it raises, at once (not retried until a timeout)."""
    pub = Publisher(addr, client_id, Spool(tmp_path / f"{client_id}.sqlite")).start()
    try:
        t0 = time.monotonic()
        with pytest.raises(BrokerRefused) as err:
            pub.wait_connected(30)
        assert time.monotonic() - t0 < 10
        assert pub.refused_total >= 1
        with pytest.raises(BrokerRefused):
            pub.publish([("wattproof/v1/s1/x/readings", b"{}")])
        return str(err.value)
    finally:
        pub.close()


# --- who may connect --------------------------------------------------------------------


def test_device_with_its_certificate_connects_and_publishes_on_its_own_topic(tls_broker: Broker, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "own.sqlite")
    with Publisher(tls_broker.client("dev-own"), "dev-own", spool, status_topic=status_topic("s1", "dev-own")) as pub:
        pub.wait_connected()
        pub.publish([(readings_topic("s1", "dev-own"), b"frame")], seq=1)
        pub.flush(30)
        assert spool.count() == 0 and pub.refused_total == 0


def test_client_without_a_certificate_is_refused_even_with_a_password(tls_broker: Broker, tmp_path: Path) -> None:
    ca = pki.PkiPaths(tls_broker.tls).ca_cert  # type: ignore[arg-type]
    anon = broker_address(tls_broker.url, ca=ca)
    assert refusal_of(anon, "anon-dev", tmp_path) == (
        f"broker {tls_broker.url} refused anon-dev: TLS: the broker requires a client certificate")
    with_password = broker_address(tls_broker.url, ca=ca, username="ingest", password="guess")
    msg = refusal_of(with_password, "pw-dev", tmp_path)
    assert msg.endswith("refused pw-dev: TLS: the broker requires a client certificate") and "guess" not in msg


def test_plain_tcp_client_on_the_tls_port_gets_no_connack(tls_broker: Broker, tmp_path: Path) -> None:
    # an MQTT 3.1.1 CONNECT (client id "plain", clean session) sent without TLS
    connect = bytes([0x10, 17, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 5]) + b"plain"
    with socket.create_connection(("127.0.0.1", tls_broker.port), timeout=5) as s:
        s.sendall(connect)
        got = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(4096)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break  # the broker closed the connection
            got += chunk
    assert not got.startswith(b"\x20")  # never a CONNACK
    # and paho speaking plain MQTT to it never connects
    pub = Publisher(f"mqtt://127.0.0.1:{tls_broker.port}", "plain-dev", Spool(tmp_path / "plain.sqlite"))
    try:
        pub.start()
        with pytest.raises(PublishError, match="no connection"):
            pub.wait_connected(3)
    finally:
        pub.close()


def test_certificate_from_another_ca_is_refused_even_with_a_device_name(tls_broker: Broker, tmp_path: Path) -> None:
    other = tmp_path / "other-pki"
    pki.init_ca(other, name="wattproof project CA")  # same look, other key
    cert, key = pki.issue_client(other, "dev-own")
    ca = pki.PkiPaths(tls_broker.tls).ca_cert  # type: ignore[arg-type]
    msg = refusal_of(broker_address(tls_broker.url, ca=ca, cert=cert, key=key), "dev-own", tmp_path)
    assert msg == f"broker {tls_broker.url} refused dev-own: TLS: the broker refused our certificate (unknown ca)"


def test_broker_whose_certificate_is_not_from_our_ca_is_refused_by_the_client(tls_broker: Broker,
                                                                              tmp_path: Path) -> None:
    other = tmp_path / "other-ca"
    pki.init_ca(other)
    good = tls_broker.client("dev-own")
    msg = refusal_of(broker_address(tls_broker.url, ca=pki.PkiPaths(other).ca_cert, cert=good.cert, key=good.key),
                     "dev-own", tmp_path)
    assert msg.startswith(f"broker {tls_broker.url} refused dev-own: TLS: the broker's certificate is not trusted (")


def test_revoked_certificate_is_refused_after_the_crl_is_updated_and_the_broker_reloaded(
        tls_broker: Broker, tmp_path: Path) -> None:
    addr = tls_broker.client("dev-revoked")
    ok = Client(addr, "dev-revoked")
    assert ok.connack == "Success"
    ok.close()
    serials = pki.revoke(tls_broker.tls, "dev-revoked")  # type: ignore[arg-type]
    crl = x509.load_pem_x509_crl(pki.PkiPaths(tls_broker.tls).crl.read_bytes())  # type: ignore[arg-type]
    assert {format(r.serial_number, "x") for r in crl} >= set(serials)
    tls_broker.reload()

    def refused() -> str | None:
        pub = Publisher(addr, "dev-revoked", Spool(tmp_path / f"r{time.monotonic_ns()}.sqlite")).start()
        try:
            pub.wait_connected(10)
            return None  # the reload has not happened yet
        except BrokerRefused as err:
            return str(err)
        finally:
            pub.close()

    msg = wait_until(refused, "the reloaded broker refuses the revoked certificate")
    assert msg == f"broker {tls_broker.url} refused dev-revoked: TLS: the broker refused our certificate (certificate revoked)"
    # a certificate issued to the same name after the revocation works again; the others were never affected
    pki.issue_client(tls_broker.tls, "dev-revoked", force=True)  # type: ignore[arg-type]
    again = Client(tls_broker.client("dev-revoked"), "dev-revoked")
    other = Client(tls_broker.client("dev-own"), "dev-own-2")
    assert (again.connack, other.connack) == ("Success", "Success")
    again.close()
    other.close()


# --- what each identity may do -----------------------------------------------------------


def test_device_publishing_on_another_devices_topic_is_refused_by_the_broker_logged_and_counted(
        tls_broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    watcher = Client(tls_broker.client("ingest"), "ingest-watch-ab")
    spool = Spool(tmp_path / "a.sqlite")
    pub = Publisher(tls_broker.client("dev-a"), "dev-a", spool).start()
    try:
        assert watcher.subscribe("wattproof/v1/+/+/readings") == ["Granted QoS 1"]
        pub.wait_connected()
        pub.publish([(readings_topic("s1", "dev-b"), b"forged-by-a")], seq=1)
        with caplog.at_level("ERROR", logger="wattproof.device"):
            with pytest.raises(BrokerRefused, match=r"refused a publish of dev-a: Not authorized$"):
                pub.flush(30)
        assert pub.refused_total == 1 and spool.count() == 1  # counted, kept, not retried
        assert [r.getMessage() for r in caplog.records] == [
            f"broker {tls_broker.url} refused a publish of dev-a: Not authorized (not retried)"]
        with pytest.raises(BrokerRefused):
            pub.flush(5)
        assert pub.refused_total == 1  # flushing again re-raises; it does not publish again
        # nor on another device's status topic, nor outside the tree
        device = Client(tls_broker.client("dev-a"), "dev-a-raw")
        assert device.publish(status_topic("s1", "dev-b"), b"offline-forged") == "Not authorized"
        assert device.publish("elsewhere/topic", b"x") == "Not authorized"
        assert device.publish(readings_topic("s1", "dev-a"), b"marker-a") == "Success"
        watcher.wait(lambda: (readings_topic("s1", "dev-a"), b"marker-a") in watcher.messages)
        assert [p for _, p in watcher.messages] == [b"marker-a"]
        device.close()
    finally:
        pub.close()
        watcher.close()


def test_ingest_identity_cannot_publish_and_reads_through_a_shared_subscription(tls_broker: Broker) -> None:
    shared = Client(tls_broker.client("ingest"), "ingest-shared-1")
    ingest = Client(tls_broker.client("ingest"), "ingest-forger")
    device = Client(tls_broker.client("dev-c"), "dev-c")
    try:
        assert shared.subscribe("$share/ingest/wattproof/v1/+/+/readings") == ["Granted QoS 1"]
        assert ingest.publish(readings_topic("s1", "dev-c"), b"forged-by-ingest") == "Not authorized"
        assert ingest.publish(readings_topic("s1", "ingest"), b"forged-as-device-ingest") == "Not authorized"
        assert ingest.publish(status_topic("s1", "dev-c"), b"forged-status") == "Not authorized"
        assert device.publish(readings_topic("s1", "dev-c"), b"marker-c") == "Success"
        shared.wait(lambda: (readings_topic("s1", "dev-c"), b"marker-c") in shared.messages)
        assert [p for _, p in shared.messages] == [b"marker-c"]
    finally:
        for c in (shared, ingest, device):
            c.close()


def test_device_subscribed_to_everything_receives_nothing(tls_broker: Broker) -> None:
    spy = Client(tls_broker.client("dev-spy"), "dev-spy")
    ingest = Client(tls_broker.client("ingest"), "ingest-spy-check")
    sender = Client(tls_broker.client("dev-d"), "dev-d")
    try:
        spy.subscribe("#")
        spy.subscribe("$share/ingest/wattproof/v1/+/+/readings")
        assert ingest.subscribe("wattproof/v1/+/+/readings") == ["Granted QoS 1"]
        assert sender.publish(readings_topic("s1", "dev-d"), b"frame-d") == "Success"
        ingest.wait(lambda: any(p == b"frame-d" for _, p in ingest.messages))  # so past the spy too
        assert spy.messages == []
    finally:
        for c in (spy, ingest, sender):
            c.close()


def test_a_frame_that_is_not_the_topics_device_is_quarantined_by_ingest_if_the_broker_let_it_through(
        tmp_path: Path, store_db: str) -> None:
    """Device A can still publish B's (replayed) frame on A's own topic; and if a broker ever let A publish
    on B's topic (here: a permissive 'injector' identity added to the ACL), ingest refuses both:
    the frame's device is not the topic's."""
    broker = Broker(tmp_path / "broker", tls=tmp_path / "pki").start()
    try:
        acl = broker.workdir / "acl"
        acl.write_text(acl.read_text() + "\nuser injector\ntopic write wattproof/v1/#\n")
        broker.reload()
        run = simulate(sites=1, days=0.05, seed=5)
        provision(store_db, run)
        a, b = run.devices[0], run.devices[1]
        a_msg = next(m for m in run.messages() if m.device == a.device and m.seq is not None)
        b_msg = next(m for m in run.messages() if m.device == b.device and m.seq is not None)
        svc = IngestService(IngestConfig(broker.client("ingest"), store_db, client_id="ingest-mismatch")).start()
        dev_a = Client(broker.client(a.device), a.device)
        try:
            assert dev_a.publish(readings_topic(a.record.site, a.device), b_msg.payload) == "Success"
            injector = wait_until(lambda: _connect_when_allowed(broker, a.record.site, b.device, a_msg.payload),
                                  "the reloaded ACL lets the injector publish")
            injector.close()
            wait_until(lambda: stored(store_db)[2].get(reasons.TOPIC_MISMATCH) == 2, "both frames quarantined")
            svc.wait_idle(idle_s=0.3)
        finally:
            dev_a.close()
            svc.stop()
        n, _, quarantined = stored(store_db)
        assert n == 0 and quarantined == {reasons.TOPIC_MISMATCH: 2}
    finally:
        broker.stop()


def _connect_when_allowed(broker: Broker, site: str, device: str, payload: bytes) -> Client | None:
    c = Client(broker.client("injector"), f"injector-{time.monotonic_ns()}")
    if c.publish(readings_topic(site, device), payload) == "Success":
        return c
    c.close()
    return None


# --- the whole path over TLS --------------------------------------------------------------


def test_whole_pipeline_delivers_every_reading_over_tls(tls_broker: Broker, store_db: str, tmp_path: Path) -> None:
    """simulate → TLS broker (one certificate per device) → ingest (shared subscription) → PostgreSQL."""
    run = simulate(sites=1, days=0.25, seed=11)
    provision(store_db, run)
    want, _ = expected_rows(run)
    for dev in run.devices:
        tls_broker.client(dev.device)  # issue each device's certificate
    paths = pki.PkiPaths(tls_broker.tls)  # type: ignore[arg-type]
    fleet_addr = broker_address(tls_broker.url, ca=paths.ca_cert, cert=paths.root / "clients" / "{device}.crt",
                                key=paths.root / "clients" / "{device}.key")
    svc = IngestService(IngestConfig(tls_broker.client("ingest"), store_db, client_id="ingest-tls-1",
                                     shared=True)).start()
    try:
        publish_run(fleet_addr, run, tmp_path / "spool")  # type: ignore[arg-type]
        wait_for_rows(store_db, want)
        svc.wait_idle(idle_s=0.5)
    finally:
        svc.stop()
    n, distinct, quarantined = stored(store_db)
    assert n == distinct == want and quarantined == {}


def test_ingest_with_a_revoked_or_foreign_certificate_fails_at_once(tls_broker: Broker, store_db: str,
                                                                    tmp_path: Path) -> None:
    other = tmp_path / "other"
    pki.init_ca(other)
    cert, key = pki.issue_client(other, "ingest")
    ca = pki.PkiPaths(tls_broker.tls).ca_cert  # type: ignore[arg-type]
    svc = IngestService(IngestConfig(broker_address(tls_broker.url, ca=ca, cert=cert, key=key), store_db,
                                     client_id="ingest-foreign"))
    t0 = time.monotonic()
    with pytest.raises(IngestError) as err:
        svc.start(timeout_s=30)
    assert time.monotonic() - t0 < 10
    assert str(err.value) == (f"broker {tls_broker.url} refused ingest-foreign: "
                              "TLS: the broker refused our certificate (unknown ca)")


# --- the command line ----------------------------------------------------------------------


def wattproof(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattproof", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_pki_commands_make_a_ca_server_and_client_certificates_that_openssl_accepts(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    for args in (["init", str(d)], ["server", str(d), "--host", "broker.example", "--host", "10.0.0.5"],
                 ["client", str(d), "meter-1"], ["client", str(d), "ingest"]):
        res = wattproof("pki", *args)
        assert res.returncode == 0, res.stderr
    paths = pki.PkiPaths(d)
    for key in (paths.ca_key, paths.server_key, paths.client_key("meter-1"), paths.client_key("ingest")):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    server = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["broker.example"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH])
    client = x509.load_pem_x509_certificate(paths.client_cert("meter-1").read_bytes())
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "meter-1"
    assert not client.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for cert, purpose in ((paths.server_cert, "sslserver"), (paths.client_cert("meter-1"), "sslclient")):
        res = subprocess.run(["openssl", "verify", "-CAfile", str(paths.ca_cert), "-crl_check", "-CRLfile",
                              str(paths.crl), "-purpose", purpose, str(cert)], capture_output=True, text=True)
        assert res.returncode == 0 and res.stdout.strip().endswith(": OK"), res.stdout + res.stderr
    assert wattproof("pki", "revoke", str(d), "meter-1").returncode == 0
    res = subprocess.run(["openssl", "verify", "-CAfile", str(paths.ca_cert), "-crl_check", "-CRLfile", str(paths.crl),
                          str(paths.client_cert("meter-1"))], capture_output=True, text=True)
    assert res.returncode != 0 and "certificate revoked" in res.stdout + res.stderr


@pytest.mark.parametrize(("args", "error"), [
    (["client", "{d}-none", "dev"], "no CA in {d}-none: run `wattproof pki init {d}-none` first"),
    (["init", "{d}"], "{d}/ca.key exists: a new CA would invalidate every certificate issued (use --force)"),
    (["client", "{d}", "bad/name"], "client name 'bad/name' must be a device id"),
    (["client", "{d}", "dev-x"], "{d}/clients/dev-x.crt exists (use --force"),
    (["revoke", "{d}", "never-issued"], "no unrevoked client certificate for 'never-issued' in {d}"),
    (["broker-config", "{d}-bare", "--out", "{d}-bare/m.conf"], "{d}-bare/server.crt is missing"),
])
def test_pki_command_errors_are_one_line(tmp_path: Path, args: list[str], error: str) -> None:
    d = tmp_path / "pki"
    pki.init_ca(d)
    pki.issue_client(d, "dev-x")
    pki.init_ca(Path(f"{d}-bare"))
    res = wattproof("pki", *[a.format(d=d) for a in args])
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {error.format(d=d)}"), res.stderr


def test_broker_config_from_the_cli_runs_in_mosquitto_and_enforces_it(tmp_path: Path) -> None:
    """What the compose file uses: `wattproof pki broker-config` → a Mosquitto that runs as configured."""
    d, port = tmp_path / "pki", free_port()
    for args in (["init", str(d)], ["server", str(d), "--host", "127.0.0.1"], ["client", str(d), "meter-9"]):
        assert wattproof("pki", *args).returncode == 0
    conf = tmp_path / "conf" / "mosquitto.conf"
    user = ["--user", "root"] if os.geteuid() == 0 else []
    res = wattproof("pki", "broker-config", str(d), "--out", str(conf), "--port", str(port), "--bind", "127.0.0.1",
                    "--data-dir", str(tmp_path / "data"), "--log-dest", f"file {tmp_path / 'mosquitto.log'}", *user)
    assert res.returncode == 0, res.stderr
    text = conf.read_text()
    for line in ("allow_anonymous false", "require_certificate true", "use_identity_as_username true",
                 f"crlfile {d.resolve()}/crl.pem", f"acl_file {conf.with_suffix('.acl').resolve()}"):
        assert line in text.splitlines()
    (tmp_path / "data").mkdir()
    exe = find_mosquitto()
    assert exe is not None
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 20, proc)
        url = f"mqtts://127.0.0.1:{port}"
        paths = pki.PkiPaths(d)
        ok = Client(broker_address(url, ca=paths.ca_cert, cert=paths.client_cert("meter-9"),
                                   key=paths.client_key("meter-9")), "meter-9")
        assert ok.publish(readings_topic("s9", "meter-9"), b"x") == "No matching subscribers"  # allowed
        assert ok.publish(readings_topic("s9", "meter-8"), b"x") == "Not authorized"
        ok.close()
        assert refusal_of(broker_address(url, ca=paths.ca_cert), "anon", tmp_path).endswith(
            "TLS: the broker requires a client certificate")
    finally:
        proc.terminate()
        proc.wait(10)


def test_simulate_and_ingest_take_tls_options_from_the_environment(tls_broker: Broker, store_db: str,
                                                                   tmp_path: Path) -> None:
    paths = pki.PkiPaths(tls_broker.tls)  # type: ignore[arg-type]
    tls_broker.client("ingest")
    env = {"WATTPROOF_HOME": str(tmp_path / "home"), "WATTPROOF_MQTT_CA": str(paths.ca_cert),
           "WATTPROOF_MQTT_CERT": str(paths.root / "clients" / "{device}.crt"),
           "WATTPROOF_MQTT_KEY": str(paths.root / "clients" / "{device}.key")}
    # certificate files that do not exist for these devices: one line naming them, before any connection
    res = wattproof("simulate", "--broker", tls_broker.url, "--sites", "1", "--days", "0.01",
                    env={**env, "WATTPROOF_MQTT_CERT": str(tmp_path / "none" / "{device}.crt"),
                         "WATTPROOF_MQTT_KEY": str(tmp_path / "none" / "{device}.key")})
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: TLS setup for {tls_broker.url} failed (") and "none/s01-" in lines[0]
    for dev in ("s01-main", "s01-sub1", "s01-sub2", "s01-pv"):
        tls_broker.client(dev)
    res = wattproof("simulate", "--broker", tls_broker.url, "--sites", "1", "--days", "0.01", "--db", store_db, env=env)
    assert res.returncode == 0, res.stderr
    # ingest with a certificate of another CA from the environment: one line, at once
    other = tmp_path / "other"
    pki.init_ca(other)
    cert, key = pki.issue_client(other, "ingest")
    res = wattproof("ingest", "--broker", tls_broker.url, "--db", store_db, "--client-id", "ingest-env",
                    env={**env, "WATTPROOF_MQTT_CERT": str(cert), "WATTPROOF_MQTT_KEY": str(key)})
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and lines == [
        f"error: broker {tls_broker.url} refused ingest-env: TLS: the broker refused our certificate (unknown ca)"]


def test_username_and_password_come_from_the_environment_too(tmp_path: Path, store_db: str) -> None:
    """For a password-file broker (the demo's): WATTPROOF_MQTT_USERNAME/PASSWORD, never shown."""
    with Broker(tmp_path / "pw-broker", auth=True).start() as broker:
        password = broker.url_for("devices").split(":")[2].split("@")[0]
        env = {"WATTPROOF_HOME": str(tmp_path / "home"), "WATTPROOF_MQTT_USERNAME": "devices",
               "WATTPROOF_MQTT_PASSWORD": unquote(password)}
        res = wattproof("simulate", "--broker", broker.url, "--sites", "1", "--days", "0.01", env=env)
        assert res.returncode == 0, res.stderr
        res = wattproof("ingest", "--broker", broker.url, "--db", store_db,
                        env={**env, "WATTPROOF_MQTT_USERNAME": "ingest", "WATTPROOF_MQTT_PASSWORD": "wrong-pw"})
        assert res.returncode == 1 and res.stderr.strip().splitlines() == [
            f"error: broker mqtt://ingest@127.0.0.1:{broker.port} refused wattproof-ingest: Not authorized"]


# --- URLs and options (no broker) ----------------------------------------------------------


def test_mqtts_urls_default_to_port_8883_and_options_fill_in_tls_files(tmp_path: Path) -> None:
    assert parse_broker_url("mqtts://broker.example") == BrokerAddress("broker.example", 8883, tls=True)
    assert parse_broker_url("mqtts://u:p@h:9883") == BrokerAddress("h", 9883, "u", "p", tls=True)
    assert str(parse_broker_url("mqtts://u:secret@h")) == "mqtts://u@h:8883"
    assert parse_broker_url("mqtt://h").port == 1883
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    addr = broker_address("mqtts://h", ca=ca, cert="c/{device}.crt", key="c/{device}.key", username="u", password="pw")
    assert (addr.ca, addr.username, addr.password) == (str(ca), "u", "pw") and "pw" not in repr(addr)
    assert (addr.for_client("m-1").cert, addr.for_client("m-1").key) == ("c/m-1.crt", "c/m-1.key")


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"url": "mqtt://h", "ca": "{ca}"}, "a CA or client certificate needs an mqtts:// broker URL, not mqtt://h:1883"),
    ({"url": "mqtts://h", "ca": "{ca}", "key": "{ca}"}, "a client key needs its certificate"),
    ({"url": "mqtts://h", "ca": "/nonexistent/ca.crt"}, "CA file /nonexistent/ca.crt not found"),
    ({"url": "https://h"}, "broker URL 'https://h' must look like mqtt://host:port, mqtts://host:port"),
])
def test_broker_options_that_cannot_work_are_one_clear_error(tmp_path: Path, kwargs: dict[str, str], error: str) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    url = kwargs.pop("url")
    with pytest.raises(PublishError) as err:
        broker_address(url, **{k: v.format(ca=ca) for k, v in kwargs.items()})  # type: ignore[arg-type]
    assert str(err.value).startswith(error)


def test_a_certificate_that_does_not_match_its_key_fails_before_connecting(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    pki.init_ca(d)
    pki.issue_client(d, "m1")
    pki.issue_client(d, "m2")
    paths = pki.PkiPaths(d)
    addr = broker_address("mqtts://127.0.0.1:1", ca=paths.ca_cert, cert=paths.client_cert("m1"),
                          key=paths.client_key("m2"))
    with pytest.raises(PublishError, match=r"^TLS setup for mqtts://127.0.0.1:1 failed"):
        Publisher(addr, "m1", Spool(tmp_path / "s.sqlite"))

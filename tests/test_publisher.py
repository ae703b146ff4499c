"""Publishing over a real Mosquitto: QoS 1, spool while the broker is away, nothing lost, in order."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from device import wire
from device.publisher import Publisher
from device.spool import Spool
from wattproof.embedded import Broker


class Collector:
    """A persistent-session MQTT 5 subscriber that records (topic, seq) in arrival order."""

    def __init__(self, broker: Broker, client_id: str) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe("test/#", qos=1)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        with self.lock:
            self.seen.append((msg.topic, msg.payload))

    def wait_for(self, n: int, timeout_s: float = 60) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len({p for _, p in self.seen}) >= n:
                    return list(self.seen)
            time.sleep(0.05)
        raise AssertionError(f"only {len(self.seen)} of {n} messages arrived")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def payloads(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [("test/dev/readings", f"frame-{i:06d}".encode()) for i in range(start, start + n)]


def in_order_without_loss(seen: list[tuple[str, bytes]], n: int) -> None:
    first_seen = list(dict.fromkeys(p for _, p in seen))  # redelivery allowed, loss and reordering not
    assert first_seen == [f"frame-{i:06d}".encode() for i in range(n)]


def test_frames_made_while_the_broker_is_down_arrive_later_in_order(mosquitto: Broker, tmp_path: Path) -> None:
    broker = Broker(tmp_path / "own-broker").start()  # our own: this test stops it
    collector = Collector(broker, "collector-1")
    time.sleep(0.3)
    pub = Publisher(broker.url, "dev-spool-1", Spool(tmp_path / "spool.sqlite"),
                    status_topic=wire.status_topic("s", "dev-spool-1")).start()
    pub.wait_connected()
    try:
        pub.publish(payloads(200))
        pub.flush(30)
        broker.stop()
        pub.publish(payloads(300, start=200))  # broker unreachable: these wait in the spool
        assert pub.pending() > 0
        broker.restart()
        pub.flush(60)
        assert pub.pending() == 0
        in_order_without_loss(collector.wait_for(500), 500)
    finally:
        pub.close()
        collector.close()
        broker.stop()


SPOOL_WRITER = """
import sys
from device.spool import Spool
spool = Spool(sys.argv[1])
spool.put_many([("test/dev/readings", f"frame-{i:06d}".encode()) for i in range(int(sys.argv[2]))])
spool.set_int("next_seq", int(sys.argv[2]) + 1)
"""


def test_spool_and_seq_survive_a_restart_of_the_device_process(mosquitto: Broker, tmp_path: Path) -> None:
    spool_path = tmp_path / "dev.sqlite"
    # A device process spools 150 frames while offline and dies before sending any.
    subprocess.run([sys.executable, "-c", SPOOL_WRITER, str(spool_path), "150"], check=True)
    collector = Collector(mosquitto, "collector-2")
    time.sleep(0.3)
    spool = Spool(spool_path)
    assert spool.get_int("next_seq", 1) == 151
    pub = Publisher(mosquitto.url, "dev-spool-2", spool).start()
    try:
        pub.wait_connected()
        pub.publish([])
        pub.flush(30)
        in_order_without_loss(collector.wait_for(150), 150)
        assert spool.count() == 0
    finally:
        pub.close()
        collector.close()


def test_status_topic_is_retained_online_then_offline(mosquitto: Broker, tmp_path: Path) -> None:
    topic = wire.status_topic("s9", "dev-status")
    pub = Publisher(mosquitto.url, "dev-status", Spool(tmp_path / "s.sqlite"), status_topic=topic).start()
    pub.wait_connected()
    time.sleep(0.2)
    pub.close()
    got: list[bytes] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_message = lambda cl, u, m: got.append(m.payload)
    c.connect("127.0.0.1", mosquitto.port)
    c.subscribe(topic, qos=1)
    c.loop_start()
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    c.loop_stop()
    assert got and b'"state":"offline"' in got[0]

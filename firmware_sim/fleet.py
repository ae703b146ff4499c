"""Running a simulated fleet against a broker: one MQTT connection and spool per device.

Owns: routing each message to its device's ``Publisher``, the two time modes (backfill: as fast
as the broker acknowledges; real time: paced at ``speed`` × wall clock), persisting each device's
next ``seq`` in its spool, and writing a run's ground truth and weather files.
Must not: know the database or the ledger.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from firmware_sim.publisher import Publisher
from firmware_sim.sim import Message, SimDevice, SimRun
from firmware_sim.spool import Spool
from firmware_sim.wire import status_topic

BATCH = 64


@dataclass
class FleetPublisher:
    broker_url: str
    spool_dir: Path
    devices: list[SimDevice]
    protocol: int = 5
    window: int = 500
    _pubs: dict[str, Publisher] = field(default_factory=dict)

    def start(self, timeout_s: float = 15.0) -> FleetPublisher:
        for dev in self.devices:
            rec = dev.record
            spool = Spool(self.spool_dir / f"{rec.device}.sqlite")
            self._pubs[rec.device] = Publisher(self.broker_url, rec.device, spool,
                                               status_topic=status_topic(rec.site, rec.device),
                                               protocol=self.protocol, window=self.window).start()
        for pub in self._pubs.values():
            pub.wait_connected(timeout_s)
        return self

    def next_seqs(self) -> dict[str, int]:
        """Each device's next seq as persisted in its spool (1 for a new device)."""
        out = {}
        for dev in self.devices:
            spool = self._pubs[dev.device].spool if dev.device in self._pubs else Spool(self.spool_dir / f"{dev.device}.sqlite")
            out[dev.device] = spool.get_int("next_seq", 1)
        return out

    def run(self, messages: Iterable[Message], speed: float | None = None, start_ms: int | None = None,
            progress: Callable[[int], None] | None = None) -> int:
        """Publish every message; return the number of readings handed over. ``speed=None``: backfill."""
        pending: dict[str, list[tuple[str, bytes]]] = {}
        max_seq: dict[str, int] = {}
        t0 = time.monotonic()
        n_read = 0
        for msg in messages:
            if speed is not None and start_ms is not None:
                due = t0 + (msg.ts_ms - start_ms) / 1000.0 / speed
                delay = due - time.monotonic()
                if delay > 0:
                    self._drain(pending)
                    time.sleep(delay)
            batch = pending.setdefault(msg.device, [])
            batch.append((msg.topic, msg.payload))
            if msg.seq is not None:
                max_seq[msg.device] = max(max_seq.get(msg.device, 0), msg.seq)
            n_read += msg.n_readings
            if len(batch) >= BATCH or speed is not None:
                self._pubs[msg.device].publish(batch)
                pending[msg.device] = []
                if progress:
                    progress(n_read)
        self._drain(pending)
        for device, seq in max_seq.items():
            self._pubs[device].spool.set_int("next_seq", seq + 1)
        if progress:
            progress(n_read)
        return n_read

    def _drain(self, pending: dict[str, list[tuple[str, bytes]]]) -> None:
        for device, batch in pending.items():
            if batch:
                self._pubs[device].publish(batch)
                pending[device] = []

    def flush(self, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        for pub in self._pubs.values():
            pub.flush(max(1.0, deadline - time.monotonic()))

    def pending(self) -> int:
        return sum(p.pending() for p in self._pubs.values())

    def close(self) -> None:
        for pub in self._pubs.values():
            pub.close()
            pub.spool.close()


def write_truth(run: SimRun, path: Path) -> None:
    with open(path, "wb") as fh:
        for rec in run.truth:
            fh.write(msgspec.json.encode(rec) + b"\n")


def read_truth(path: Path) -> list:  # type: ignore[type-arg]
    from firmware_sim.sim import TruthRecord

    dec = msgspec.json.Decoder(TruthRecord)
    return [dec.decode(line) for line in Path(path).read_bytes().splitlines() if line.strip()]


def write_weather(run: SimRun, path: Path) -> None:
    """Hourly outdoor temperature per site: ``site,timestamp,temperature_c`` (UTC ISO 8601)."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["site", "timestamp", "temperature_c"])
        w.writerows(run.weather_rows())


def write_sites(run: SimRun, path: Path) -> None:
    rows = [{"site": s.site, "kind": s.kind, "lat": s.lat, "lon": s.lon, "pv_kwp": s.pv_kwp,
             "annual_kwh": round(s.annual_kwh)} for s in run.sites]
    path.write_bytes(msgspec.json.format(msgspec.json.encode(rows)))

"""Running a simulated fleet against a broker: one MQTT connection and spool per device.

Owns: routing each message to its device's ``Publisher``, the two time modes (backfill: as fast
as the broker acknowledges; real time: paced at ``speed`` × wall clock), handing each batch's
highest ``seq`` and latest reading time to the spool with it (persisted before the batch leaves:
see ``Spool``), where a restarted run continues (``resume_marks``, ``frames_before``), and writing
a run's ground truth and weather files.
Must not: know the database or the ledger.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from device.publisher import BrokerAddress, Publisher
from device.spool import Spool
from device.wire import status_topic
from firmware_sim.sim import Message, SimDevice, SimRun

BATCH = 64


class _Times(msgspec.Struct):
    ts_ms: int


class _FrameTimes(msgspec.Struct):
    readings: list[_Times]


_times = msgspec.json.Decoder(_FrameTimes)


@dataclass
class _Batch:
    """One device's messages waiting to be spooled, with the highest seq among them."""

    items: list[tuple[str, bytes]] = field(default_factory=list)
    seq: int | None = None
    _newest: bytes | None = None  # payload of the frame with the highest seq

    def add(self, msg: Message) -> None:
        self.items.append((msg.topic, msg.payload))
        if msg.seq is not None and (self.seq is None or msg.seq >= self.seq):
            self.seq, self._newest = msg.seq, msg.payload

    def last_ts_ms(self) -> int | None:
        """Latest reading time of the newest frame (a clock-skewed one can only move it ahead)."""
        if self._newest is None:
            return None
        try:
            return max((r.ts_ms for r in _times.decode(self._newest).readings), default=None)
        except msgspec.DecodeError:
            return None

    def clear(self) -> None:
        self.items, self.seq, self._newest = [], None, None


def frames_before(run: SimRun, marks: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Per device with a mark: (frames, readings) of ``run`` whose first reading is at or before the
    mark, i.e. already covered by an earlier run. A restarted simulator skips them (``ts_ms > mark``)
    and starts the device's seqs that many below its persisted ``next_seq``, so the first frame it
    sends carries ``next_seq``: no reading is sent twice, no seq is used twice."""
    out = {}
    for plan in run._plans:  # noqa: SLF001 - the plan is this package's own
        mark = marks.get(plan.dev.device)
        if mark is None:
            continue
        skipped = [c for c in plan.frames if len(c) and int(plan.ts_ms[c[0]]) <= mark]
        out[plan.dev.device] = (len(skipped), sum(len(c) for c in skipped) * len(plan.channels))
    return out


@dataclass
class FleetPublisher:
    broker_url: str | BrokerAddress
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
        try:
            for pub in self._pubs.values():
                pub.wait_connected(timeout_s)
        except BaseException:
            self.close()
            raise
        return self

    def next_seqs(self) -> dict[str, int]:
        """Each device's next seq as persisted in its spool (1 for a new device)."""
        return {d: v for d, (v, _) in self._spool_state().items()}

    def resume_marks(self) -> dict[str, int]:
        """Each device's latest reading time already spooled by an earlier run (devices that have one)."""
        return {d: ts for d, (_, ts) in self._spool_state().items() if ts is not None}

    def _spool_state(self) -> dict[str, tuple[int, int | None]]:
        out: dict[str, tuple[int, int | None]] = {}
        for dev in self.devices:
            own = dev.device not in self._pubs
            spool = Spool(self.spool_dir / f"{dev.device}.sqlite") if own else self._pubs[dev.device].spool
            ts = spool.get_int("last_ts_ms", -1)
            out[dev.device] = (spool.get_int("next_seq", 1), ts if ts >= 0 else None)
            if own:
                spool.close()
        return out

    def run(self, messages: Iterable[Message], speed: float | None = None, start_ms: int | None = None,
            progress: Callable[[int], None] | None = None) -> int:
        """Publish every message; return the number of readings handed over. ``speed=None``: backfill.

        Each batch goes to its device's ``Publisher.publish`` with its highest seq (persisted before
        any of it leaves, see ``Spool``) and its latest reading time."""
        pending: dict[str, _Batch] = {}
        t0 = time.monotonic()
        n_read = 0
        for msg in messages:
            if speed is not None and start_ms is not None:
                due = t0 + (msg.ts_ms - start_ms) / 1000.0 / speed
                delay = due - time.monotonic()
                if delay > 0:
                    self._drain(pending)
                    time.sleep(delay)
            batch = pending.setdefault(msg.device, _Batch())
            batch.add(msg)
            n_read += msg.n_readings
            if len(batch.items) >= BATCH or speed is not None:
                self._send(msg.device, batch)
                if progress:
                    progress(n_read)
        self._drain(pending)
        if progress:
            progress(n_read)
        return n_read

    def _send(self, device: str, batch: _Batch) -> None:
        self._pubs[device].publish(batch.items, seq=batch.seq, last_ts_ms=batch.last_ts_ms())
        batch.clear()

    def _drain(self, pending: dict[str, _Batch]) -> None:
        for device, batch in pending.items():
            if batch.items:
                self._send(device, batch)

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

"""The agent's loop: sample the meter, map its registers onto wire channels, sign frames, spool, publish.

Owns: the sampling schedule (every ``interval_s`` on the monotonic clock; a late tick is skipped, never
bunched), the clock policy (no sample while the kernel says the clock is unsynchronized, when
``clock.require_sync``; no reading whose ``ts_ms`` is not after the previous one), frame assembly
(``frame_samples`` samples per frame, each sample one reading per mapped channel carrying the meter's
own register), signing with ``device.wire.sign_frame`` and handing the frame with its ``seq`` to
``device.publisher.Publisher`` — which spools it (seq persisted, fsync'ed in blocks) before it leaves,
exactly as the simulator's fleet does — and the shutdown (the partial frame is signed and spooled,
then a bounded wait for the broker's acknowledgements; what is left stays in the spool for next time).

Sequence numbers: the first frame of a process carries the spool's persisted ``next_seq`` (1 for a new
device); after a kill, that is the reserved mark, so a gap, never a reuse (``device.spool``). Readings of
the frame still being assembled when the process is killed are not evidence yet; the energy they saw is
not lost, because the next reading carries the meter's register, which kept counting.
Must not: know a meter protocol (drivers do), the database or the ledger.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.agent.clock import ClockState, kernel_clock
from device.agent.config import AgentConfig
from device.agent.metrics import AgentMetrics
from device.agent.sample import Driver, NoNewData, ReadError, to_readings
from device.publisher import Publisher, PublishError
from device.spool import Spool
from device.wire import Frame, Reading, encode_frame, readings_topic, sign_frame, status_topic

log = logging.getLogger("wattproof.agent")


class Agent:
    def __init__(self, cfg: AgentConfig, driver: Driver, key: Ed25519PrivateKey, *,
                 metrics: AgentMetrics | None = None, clock: Callable[[], ClockState] = kernel_clock,
                 window: int = 100) -> None:
        self.cfg = cfg
        self.driver = driver
        self.key = key
        self.metrics = metrics or AgentMetrics()
        self.clock = clock
        self.channels = cfg.channel_map()
        self.topic = readings_topic(cfg.site, cfg.device)
        self.spool = Spool(cfg.spool)
        self.publisher = Publisher(cfg.broker_address(), cfg.device, self.spool, status_topic=status_topic(cfg.site, cfg.device),
                                   window=window)
        self._spooled_at_start = self.spool.count()
        self.metrics.watch_spool(self.spool_depth)
        self.seq = self.spool.get_int("next_seq", 1)
        self.last_ts_ms = self.spool.get_int("last_ts_ms", -1)
        self.pending: list[Reading] = []
        self.pending_samples = 0
        self.frames = 0
        self._clock_state: ClockState | None = None
        self._clock_due = 0.0
        self._failing = 0  # consecutive failed reads (logged at the first and on recovery)
        self._bad_seen = 0
        self._acked_seen = 0

    def spool_depth(self) -> int:
        """Frames spooled and not yet acknowledged by the broker (the publisher deletes acknowledged rows in
        batches, so the spool's row count runs ahead of this)."""
        return max(0, self._spooled_at_start + self.frames - self.publisher.acked_total)

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Agent:
        self.driver.open()
        self.publisher.start()  # connects in the background; frames spool meanwhile
        self.metrics.serve(self.cfg.metrics_port, self.cfg.metrics_addr)
        log.info("agent %s/%s: %s, %s, next seq %d, %d frames spooled", self.cfg.site, self.cfg.device,
                 self.driver.name, self.publisher.address, self.seq, self.spool.count())
        return self

    def run(self, stop: threading.Event) -> None:
        """Sample until ``stop`` is set, then finish (partial frame signed, bounded flush)."""
        next_tick = time.monotonic()
        try:
            while not stop.is_set():
                self.tick()
                next_tick += self.cfg.interval_s
                delay = next_tick - time.monotonic()
                if delay < 0:  # fell behind (a slow meter): skip the missed ticks
                    next_tick = time.monotonic()
                    delay = 0.0
                stop.wait(delay)
        finally:
            self.finish()

    def finish(self, flush_s: float = 5.0) -> None:
        try:
            if self.pending:
                self.emit()
            try:
                self.publisher.flush(flush_s)
            except PublishError as exc:
                log.warning("stopping with frames still spooled (sent at the next start): %s", exc)
            log.info("agent stopped: %d frames signed by this process, next seq %d", self.frames, self.seq)
        finally:
            self.publisher.close()
            self.spool.close()
            self.driver.close()
            self.metrics.close()

    # --- one sample ----------------------------------------------------------------------------
    def clock_ok(self) -> bool:
        now = time.monotonic()
        if self._clock_state is None or now >= self._clock_due:
            state = self.clock()
            if self._clock_state is None or state.synchronized != self._clock_state.synchronized:
                log.info("clock %s (%s, max error %.3f s)", "synchronized" if state.synchronized else "NOT synchronized",
                         state.source, state.max_error_us / 1e6)
            self._clock_state, self._clock_due = state, now + self.cfg.clock.check_every_s
            self.metrics.clock_synced.set(1 if state.synchronized else 0)
            self.metrics.clock_max_error.set(state.max_error_us / 1e6)
        return self._clock_state.synchronized or not self.cfg.clock.require_sync

    def tick(self) -> None:
        self._observe()
        if not self.clock_ok():
            self.metrics.withheld.labels("clock_unsynchronized").inc()
            return
        try:
            sample = self.driver.read()
        except NoNewData:
            return
        except ReadError as exc:
            self.metrics.read_errors.inc()
            if self._failing == 0:
                log.warning("meter read failed (retrying every %.3g s): %s", self.cfg.interval_s, exc)
            self._failing += 1
            return
        if self._failing:
            log.info("meter answered again after %d failed reads", self._failing)
            self._failing = 0
        if sample.ts_ms <= self.last_ts_ms:  # the clock stepped back: never a reading out of order
            self.metrics.withheld.labels("clock_backwards").inc()
            return
        try:
            readings = to_readings(sample, self.channels)
        except ReadError as exc:
            self.metrics.read_errors.inc()
            log.warning("%s", exc)
            return
        self.pending.extend(readings)
        self.pending_samples += 1
        self.last_ts_ms = sample.ts_ms
        self.metrics.samples.inc()
        for name, reg in sample.registers.items():
            self.metrics.meter.labels(f"{name}_wh").set(reg.energy_wh)
            self.metrics.meter.labels(f"{name}_power_w").set(reg.power_w)
        for name, value in sample.detail.items():
            self.metrics.meter.labels(name).set(value)
        if self.pending_samples >= self.cfg.frame_samples:
            self.emit()

    def emit(self) -> None:
        """Sign the pending readings as one frame and hand it, with its seq, to the spool and broker."""
        sent_ms = max(time.time_ns() // 1_000_000, self.last_ts_ms)
        frame = Frame(v=1, site=self.cfg.site, device=self.cfg.device, seq=self.seq, sent_ms=sent_ms,
                      readings=self.pending)
        payload = encode_frame(sign_frame(frame, self.key))
        self.publisher.publish([(self.topic, payload)], seq=self.seq, last_ts_ms=self.last_ts_ms)
        self.metrics.frames_signed.inc()
        self.metrics.seq.set(self.seq)
        self.seq += 1
        self.frames += 1
        self.pending, self.pending_samples = [], 0

    def _observe(self) -> None:
        bad = getattr(self.driver, "bad_telegrams", 0)
        if bad > self._bad_seen:
            self.metrics.bad_telegrams.inc(bad - self._bad_seen)
            self._bad_seen = bad
        acked = self.publisher.acked_total
        if acked > self._acked_seen:
            self._acked_seen = acked
            self.metrics.last_publish.set(time.time())


def make_driver(cfg: AgentConfig) -> Driver:
    """The configured meter's driver (protocol libraries imported only for the driver in use)."""
    from device.agent.config import DsmrMeter, ModbusRtuMeter, ModbusTcpMeter, S0Meter

    m = cfg.meter
    if isinstance(m, DsmrMeter):
        from device.agent.dsmr import DsmrDriver

        return DsmrDriver(m)
    if isinstance(m, ModbusTcpMeter | ModbusRtuMeter):
        from device.agent.modbus import ModbusDriver

        return ModbusDriver(m)
    assert isinstance(m, S0Meter)
    from device.agent.s0 import S0Driver

    return S0Driver(m)

"""The agent's health as Prometheus metrics (prometheus-client), on a registry of its own.

Owns: the metric names and their HTTP endpoint (``metrics_port``/``metrics_addr`` of agent.toml; 0: none).
``wattproof_agent_read_errors_total``, ``wattproof_agent_bad_telegrams_total`` (DSMR CRC or parse
failures), ``wattproof_agent_spool_depth`` (frames waiting for the broker), ``wattproof_agent_last_publish_
timestamp_seconds`` (last broker acknowledgement seen), samples taken and withheld (clock), frames
signed, the clock state, and the meter's own values (``wattproof_agent_meter_value{quantity=...}``:
tariff registers, per-phase power, gas — what the wire format does not carry).
Must not: decide anything; it only reports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class AgentMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.samples = Counter("wattproof_agent_samples", "Meter samples turned into readings", registry=r)
        self.read_errors = Counter("wattproof_agent_read_errors", "Meter reads that failed (timeout, bus, no telegram)",
                                   registry=r)
        self.bad_telegrams = Counter("wattproof_agent_bad_telegrams", "DSMR telegrams skipped (CRC mismatch or unparsable)",
                                     registry=r)
        self.withheld = Counter("wattproof_agent_samples_withheld", "Samples not taken, by reason", ["reason"], registry=r)
        self.frames_signed = Counter("wattproof_agent_frames_signed", "Frames signed and spooled", registry=r)
        self.spool_depth = Gauge("wattproof_agent_spool_depth", "Frames in the spool, not yet acknowledged by the broker",
                                 registry=r)
        self.last_publish = Gauge("wattproof_agent_last_publish_timestamp_seconds",
                                  "Unix time when the broker last acknowledged a frame", registry=r)
        self.clock_synced = Gauge("wattproof_agent_clock_synchronized", "1 if the kernel clock is NTP-synchronized",
                                  registry=r)
        self.clock_max_error = Gauge("wattproof_agent_clock_max_error_seconds", "Kernel's maximum clock error",
                                     registry=r)
        self.seq = Gauge("wattproof_agent_last_seq", "Sequence number of the last frame signed", registry=r)
        self.meter = Gauge("wattproof_agent_meter_value", "The meter's own values (units in the quantity name)",
                           ["quantity"], registry=r)
        self._server: Any = None

    def watch_spool(self, depth: Callable[[], int]) -> None:
        self.spool_depth.set_function(depth)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        if port:
            self._server, _ = start_http_server(port, addr=addr, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

"""A simulated Modbus meter: a real pymodbus server answering with a register map, values changing in time.

For the agent's tests and benchmark, and to bench-test an install before the meter is wired:
``python -m device.agent.meter_sim --map sdm630 --tcp 127.0.0.1:5020`` or ``--rtu-pty`` (makes two
pseudo-terminals joined back to back, serves RTU on one and prints the other's path for the agent).
The meter's power swings between import and export (``--mean-w``, ``--swing-w``, ``--period-s``); its
import and export registers integrate that power over wall-clock time, so they only ever count up, and
keep counting while the process is stopped (SIGSTOP: a meter that stops answering), as a real meter does.
Must not: be imported by the agent itself.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import select
import sys
import threading
import time
import tty

from pymodbus.client import ModbusTcpClient
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from device.agent.modbus import RegisterMap, load_map


class SimMeter:
    """Power p(t) = mean + swing·sin(2πt/period); registers integrate max(p, 0) and max(−p, 0)."""

    def __init__(self, rmap: RegisterMap, mean_w: float = 800.0, swing_w: float = 2500.0, period_s: float = 30.0,
                 import_wh: float = 1_234_567.0, export_wh: float = 89_012.0) -> None:
        self.map, self.mean, self.swing, self.period = rmap, mean_w, swing_w, period_s
        self.t0 = self.t = time.time()
        self.import_wh, self.export_wh = import_wh, export_wh

    def power(self, t: float) -> float:
        return self.mean + self.swing * math.sin(2 * math.pi * (t - self.t0) / self.period)

    def advance(self, now: float) -> dict[str, float]:
        steps = max(1, int((now - self.t) / 0.5))  # trapezoids of at most 0.5 s
        dt = (now - self.t) / steps
        for i in range(steps):
            p = 0.5 * (self.power(self.t + i * dt) + self.power(self.t + (i + 1) * dt))
            self.import_wh += max(p, 0.0) * dt / 3600
            self.export_wh += max(-p, 0.0) * dt / 3600
        self.t = now
        p = self.power(now)
        values = {"import_wh": self.import_wh, "export_wh": self.export_wh, "power_w": p,
                  "import_power_w": max(p, 0.0), "export_power_w": max(-p, 0.0), "frequency_hz": 50.0}
        for name in self.map.registers:
            if name.startswith("power_l"):
                values[name] = p / 3
            elif name.startswith(("voltage", "current")):
                values[name] = 230.0 if name.startswith("voltage") else abs(p) / 690
            elif name.startswith(("import_l", "export_l")):
                values[name] = values[name[:6] + "_wh"] / 3
        return values

    def registers(self, now: float) -> dict[int, int]:
        out: dict[int, int] = {}
        values = self.advance(now)
        for name, spec in self.map.registers.items():
            raw = values.get(name, 0.0) / spec.scale
            dtype = ModbusTcpClient.DATATYPE[spec.type.upper()]
            words = ModbusTcpClient.convert_to_registers(raw if spec.type.startswith("float") else round(raw), dtype,
                                                         word_order=spec.word_order)
            for i, w in enumerate(words):
                out[spec.address + i] = w
        return out

    async def action(self, function_code: int, start_address: int, address: int, count: int,
                     current_registers: list[int], set_values: object) -> None:
        """pymodbus SimDevice action: refresh every register of the map before the request is answered."""
        for addr, word in self.registers(time.time()).items():
            current_registers[addr - start_address] = word

    def device(self, unit_id: int) -> SimDevice:
        top = max(s.address + 4 for s in self.map.registers.values())
        return SimDevice(id=unit_id, simdata=[SimData(0, count=top, values=0, datatype=DataType.REGISTERS)],
                         action=self.action)


def pty_pair() -> tuple[str, str]:
    """Two pseudo-terminals joined back to back (what one writes, the other reads): (server side, client side)."""
    ends = []
    for _ in range(2):
        master, slave = os.openpty()
        tty.setraw(slave)
        ends.append((master, slave, os.ttyname(slave)))
    (ma, _, pa), (mb, _, pb) = ends

    def relay() -> None:
        while True:
            ready, _, _ = select.select([ma, mb], [], [])
            for src in ready:
                try:
                    data = os.read(src, 4096)
                except OSError:
                    continue
                os.write(mb if src == ma else ma, data)

    threading.Thread(target=relay, daemon=True).start()
    return pa, pb


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--map", default="sdm630")
    ap.add_argument("--unit", type=int, default=1)
    ap.add_argument("--tcp", help="host:port to serve Modbus TCP on")
    ap.add_argument("--rtu-pty", action="store_true", help="serve RTU on a pty pair; print the agent's end")
    ap.add_argument("--baudrate", type=int, default=9600)
    ap.add_argument("--mean-w", type=float, default=800.0)
    ap.add_argument("--swing-w", type=float, default=2500.0)
    ap.add_argument("--period-s", type=float, default=30.0)
    args = ap.parse_args(argv)
    meter = SimMeter(load_map(args.map), args.mean_w, args.swing_w, args.period_s)
    dev = meter.device(args.unit)
    if args.tcp:
        host, port = args.tcp.rsplit(":", 1)
        print(f"serving {meter.map.meter.name} on tcp {args.tcp}", flush=True)
        asyncio.run(StartAsyncTcpServer(dev, address=(host, int(port))))
    elif args.rtu_pty:
        server_end, client_end = pty_pair()
        print(client_end, flush=True)
        asyncio.run(StartAsyncSerialServer(dev, port=server_end, baudrate=args.baudrate))
    else:
        sys.exit("give --tcp host:port or --rtu-pty")


if __name__ == "__main__":
    main()

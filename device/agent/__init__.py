"""device.agent: the Raspberry Pi agent that reads a real meter and publishes signed frames.

Owns: the agent's configuration (``config.py``, ``agent.toml``), the meter drivers on their protocol
libraries (``dsmr.py``: DSMR P1 with dsmr-parser and pyserial; ``modbus.py``: Modbus RTU/TCP with pymodbus
and the register maps in ``maps/``; ``s0.py``: S0 pulses with gpiozero), the sampling loop that maps meter
registers onto wire channels and signs frames (``runner.py``), the kernel clock check (``clock.py``) and
the health metrics (``metrics.py``). It publishes through the same ``device.wire``, ``device.spool`` and
``device.publisher`` as the simulator, so ingest, audit and ledger need no change to trust it.
Must not: import the simulator, ingest, audit, ledger or anything heavy (numpy, pandas, psycopg...): it
runs on a Pi Zero 2 W. Documented in ``docs/agent.md``.
"""

"""Fallback MQTT broker for ``wattproof demo`` on machines without Mosquitto: amqtt from PyPI.

Run as ``python -m wattproof.amqtt_broker PORT``; listens on 127.0.0.1 only, anonymous.
amqtt speaks MQTT 3.1.1, so clients connect with protocol 3.1.1 when ``Broker.kind == "amqtt"``.
"""

from __future__ import annotations

import asyncio
import sys


async def _serve(port: int) -> None:
    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    await asyncio.Event().wait()


def main() -> None:
    asyncio.run(_serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()

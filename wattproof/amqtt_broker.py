"""Fallback MQTT broker for ``wattproof demo`` on machines without Mosquitto: amqtt from PyPI.

Run as ``python -m wattproof.amqtt_broker PORT [CREDENTIALS_JSON]``; listens on 127.0.0.1 only.
Without a credentials file it accepts anonymous clients (tests). With one (``Broker(auth=True)``,
the demo) it refuses anonymous clients and wrong passwords (amqtt's ``FileAuthPlugin`` over an
Argon2 password file written next to the credentials) and applies the same ACL as the Mosquitto
configuration: ``devices`` may only publish under ``wattproof/v1/#``, ``ingest`` may only subscribe
to it. amqtt speaks MQTT 3.1.1, so clients connect with protocol 3.1.1 when ``Broker.kind == "amqtt"``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from wattproof.embedded import ROLES, TOPIC_ROOT


def auth_plugins(credentials: Path) -> dict[str, Any]:
    """amqtt 0.12 plugin config: password file (Argon2) + topic ACL for the roles in ``credentials``."""
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    creds = json.loads(credentials.read_text())
    hasher = PasswordHash((Argon2Hasher(),))
    passwd = credentials.with_name("amqtt-passwd")
    fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(f"{role}:{hasher.hash(creds[role])}\n" for role in ROLES)
    return {
        "amqtt.plugins.authentication.FileAuthPlugin": {"password_file": str(passwd)},
        "amqtt.plugins.topic_checking.TopicAccessControlListPlugin": {
            "acl": {"ingest": [TOPIC_ROOT]},  # subscribe
            "publish_acl": {"devices": [TOPIC_ROOT]},
        },
    }


async def _serve(port: int, credentials: Path | None) -> None:
    from amqtt.broker import Broker

    plugins = (auth_plugins(credentials) if credentials is not None
               else {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}})
    broker = Broker({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}}, "plugins": plugins})
    await broker.start()
    await asyncio.Event().wait()


def main() -> None:
    asyncio.run(_serve(int(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None))


if __name__ == "__main__":
    main()

"""The operator's side of trust: what an auditor should pin, gathered from this deployment.

Owns ``trust_from_operator``: the local ledger's operator public key, every registered device's key and,
for Fabric, the organisations' root certificates, as a ``wattproof-trust/1`` document. This is what the
operator *claims*; an auditor compares it out of band (device commissioning records, the consortium's
published roots) before pinning it. Never creates a key or a ledger.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from device.wire import b64url
from ledger.trust import FORMAT, FabricTrust, Trust


def device_keys_of(dsn: str) -> dict[str, list[str]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {d: [b64url(bytes(k))] for d, k in conn.execute("SELECT device_id, public_key FROM devices ORDER BY 1")}


def trust_from_operator(dsn: str, ledger: str, ledger_dir: Path | None) -> Trust:
    from wattproof import config

    operator_keys: list[str] = []
    fabric: FabricTrust | None = None
    if ledger == "local":
        from device.identity import public_key_b64, read_private_key

        key_file = (ledger_dir or config.data_dir() / "ledger") / "operator.key"
        if not key_file.exists():
            raise FileNotFoundError(f"no operator key at {key_file}: nothing has been anchored on this local ledger")
        operator_keys.append(public_key_b64(read_private_key(key_file)))
    else:
        from ledger.fabric.collect import trust_from_network
        from wattproof.commands.fabric_cmd import network_dir

        fabric = trust_from_network(network_dir(ledger_dir))
    return Trust(format=FORMAT, operator_keys=operator_keys, devices=device_keys_of(dsn), fabric=fabric)

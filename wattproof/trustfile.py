"""The operator's side of trust: what an auditor should pin, gathered from this deployment.

Owns ``trust_from_operator``: the local ledger's operator public key, every registered device's keys (with their
validity intervals once a device's key was rotated or it was revoked) and,
for Fabric, the organisations' root certificates, as a ``wattproof-trust/1`` document. This is what the
operator *claims*; an auditor compares it out of band (device commissioning records, the consortium's
published roots) before pinning it. Never creates a key or a ledger.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from device.wire import b64url
from ledger.trust import FORMAT, FabricTrust, KeyPeriod, Trust


def device_keys_of(dsn: str) -> dict[str, list[str | KeyPeriod]]:
    """Every registered device's keys: a plain key when the device has one key valid at every time (as trust files
    always had it), else each key with its validity interval (docs/device-identity.md)."""
    out: dict[str, list[str | KeyPeriod]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for d, k, lo, hi in conn.execute("SELECT device_id, public_key, valid_from_ms, valid_until_ms FROM device_keys "
                                         "ORDER BY device_id, valid_from_ms NULLS FIRST"):
            out.setdefault(d, []).append(KeyPeriod(key=b64url(bytes(k)), from_ms=lo, until_ms=hi))
    for d, periods in out.items():
        only = periods[0]
        if len(periods) == 1 and isinstance(only, KeyPeriod) and only.from_ms is None and only.until_ms is None:
            out[d] = [only.key]
    return out


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

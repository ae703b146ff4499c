"""device: what every producer of readings shares — the signed wire format (wire.py), the device
identity and Ed25519 acceptance rule (identity.py, ed25519.py), the offline spool (spool.py) and the
MQTT publisher (publisher.py). The simulator (`firmware_sim/`) and the Raspberry Pi agent
(`device/agent/`) both publish through it; ingest and the ledger read frames with it, and nothing
outside the simulator imports the simulator's models."""

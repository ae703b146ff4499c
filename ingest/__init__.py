"""ingest: the door of the evidence. The MQTT service (service.py), validation with reason codes
(validate.py), the idempotent batched writer and quarantine (writer.py, copybin.py), the device
registry in the database (registry.py) and the store's schema and migrations (schema.py, migrations/)."""

"""firmware_sim: the device side. Wire format and signing (wire.py, identity.py), load and PV models
(profiles.py, sim.py), fault scenarios (scenarios.py) and the MQTT publisher with its offline spool
(publisher.py, fleet.py, spool.py)."""

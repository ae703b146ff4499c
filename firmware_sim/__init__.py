"""firmware_sim: the simulated fleet. Load and PV models (profiles.py, sim.py), fault scenarios
(scenarios.py) and the fleet publisher (fleet.py); frames are built, signed, spooled and published
through the shared device side (`device/`)."""

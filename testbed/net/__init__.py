"""The emulated network: topology schema, addressing, shaping, Mininet, delay daemons, probes, cleanup."""

"""Pure policy objects (no sockets, no clocks read inside: time is passed in), shared by the emulator's
nodes and a future simulator, and driven directly by tests."""

"""Pure policy objects (no sockets, no clocks read inside: time is passed in), shared by the emulator's
nodes and a future simulator, and driven directly by tests."""

# AWC imports the speculation module, so it joins the policy registry here (not in speculation.py, which would
# make the import circular); any import of the policies package sees "awc".
from testbed.policies import awc, speculation  # noqa: E402
awc.register(speculation.SPECULATION_POLICIES)

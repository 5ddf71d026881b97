"""`make bench`: timing of shaping, nodes and policies (printed, never asserted)."""

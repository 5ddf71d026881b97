"""Time-varying links: channel schema, radio physics, mobility, traces, the per-tick plan and its driver."""

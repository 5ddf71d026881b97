"""Experiments: schema, runner, manifest, metrics, plots, report."""

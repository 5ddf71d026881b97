"""Shared by every layer: YAML loading with line numbers, problem reporting, figure helpers."""

"""Shared wire models and pure domain rules (validation, pressure, pagination)."""

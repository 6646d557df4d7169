"""Measurements: attention scaling (time and peak memory per mechanism and length)."""

"""Builders, stand-in servers and the thin NVML fake the tests share."""

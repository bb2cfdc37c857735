"""Incident detection (rules as data), lifecycle and evidence."""

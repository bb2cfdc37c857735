"""Telling people: Alertmanager, webhooks and maintenance silences, off the GUI thread and the poller's loop."""

"""GPU Ops Console core: sources, polling, history, incidents and storage. Never imports Qt."""

__version__ = "0.1.0"

"""microturn: one model that listens, watches, thinks and speaks in 200 ms micro-turns."""

__version__ = "0.1.0"

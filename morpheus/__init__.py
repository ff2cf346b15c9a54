"""Morpheus: plant and tend forests of clustered NATS nodes."""

__version__ = "0.1.0"

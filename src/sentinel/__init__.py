"""sentinel: a community safety daemon for MQTT sensors."""

__version__ = "0.1.0"

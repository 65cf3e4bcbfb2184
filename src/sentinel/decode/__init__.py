"""Decode stage: raw MQTT messages → canonical readings, driven by device profiles.

Pure and synchronous: no I/O, no clock of its own (`now` comes with the message).
"""

from sentinel.decode.decoder import Decoder

__all__ = ["Decoder"]

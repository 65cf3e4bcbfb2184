"""Source stage: MQTT messages in, acknowledgements out."""

from sentinel.source.mqtt import MqttSource

__all__ = ["MqttSource"]

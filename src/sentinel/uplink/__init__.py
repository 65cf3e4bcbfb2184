"""The box's uplink to its district (street office): see sentinel.district.wire.

On the daemon's one MQTT connection (the box's broker bridges `<prefix>/<community>/#` to
the district, config/mosquitto/bridge.conf): a retained heartbeat with a last will
(`heartbeat`), and the district's signed commands (`commands`). Nothing here is in the
alarm path: the box decides and pages on its own, whether the district is there or not.
"""

from sentinel.uplink.aggregates import Aggregator
from sentinel.uplink.commands import CommandHandler
from sentinel.uplink.heartbeat import HeartbeatTask

__all__ = ["Aggregator", "CommandHandler", "HeartbeatTask"]

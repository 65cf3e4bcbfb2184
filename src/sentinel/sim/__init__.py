"""The device simulator: realistic telemetry of a whole inventory, published over MQTT.

`model` holds the pure, seeded behaviour of every device kind; `publisher` paces the fleet
and publishes each reading in its device's own profile format.
"""

from sentinel.sim.model import EVENTS, FleetModel, Sample, SimEvent, parse_inject
from sentinel.sim.publisher import (
    SimOptions,
    SimProgress,
    SimResult,
    SimulationError,
    run_simulation,
)

__all__ = [
    "EVENTS",
    "FleetModel",
    "Sample",
    "SimEvent",
    "SimOptions",
    "SimProgress",
    "SimResult",
    "SimulationError",
    "parse_inject",
    "run_simulation",
]

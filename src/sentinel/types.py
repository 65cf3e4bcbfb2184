"""Value types that flow between pipeline stages (bottom layer: stdlib only)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

Value = float | bool | str


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One MQTT message as received, before decoding.

    `token` identifies the delivery for acknowledgement; it belongs to the source that
    produced the message and is meaningless elsewhere.
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool
    received_at: float
    token: object = None
    # The broker's redelivery mark and packet identifier (0 for QoS 0): a message our ack
    # never reached comes back with DUP set and its original identifier.
    dup: bool = False
    mid: int = 0


@dataclass(frozen=True, slots=True)
class Reading:
    """A canonical, validated reading of one device at one instant.

    `ts` is the device's timestamp (epoch seconds, UTC) or the receive time when the
    device sends none. `values` holds canonical fields of the device's kind, in canonical
    units (see `sentinel.kinds`).
    """

    device_id: str
    kind: str
    ts: float
    received_at: float
    values: Mapping[str, Value]
    # False when the device sent no time and `ts` is the receive time (see sentinel.stamps).
    timed: bool = True

    @property
    def ts_ms(self) -> int:
        return round(self.ts * 1000)


# (topic, packet identifier, payload digest): one QoS 1 message, across redeliveries.
Fingerprint = tuple[str, int, bytes]


# Receipts kept (sentinel.stamps): far above the unacknowledged messages that can exist at
# once (`[ingest] queue_max`, 5,000 by default, plus the broker's in-flight window), and
# small (about 100 bytes a row).
RECEIPTS_KEPT = 100_000


@dataclass(frozen=True, slots=True)
class Receipt:
    """The time given to one untimed reading of a QoS 1 message."""

    topic: str
    mid: int
    digest: bytes
    device_id: str
    ts_ms: int

    @property
    def fingerprint(self) -> Fingerprint:
        return (self.topic, self.mid, self.digest)


class RejectReason(enum.StrEnum):
    """Why a message was rejected; each reason is counted separately."""

    PAYLOAD_TOO_LARGE = "payload_too_large"
    EMPTY_PAYLOAD = "empty_payload"
    INVALID_ENCODING = "invalid_encoding"
    INVALID_JSON = "invalid_json"
    NO_PROFILE = "no_profile"
    MISSING_DEVICE_ID = "missing_device_id"
    UNKNOWN_DEVICE = "unknown_device"
    DEVICE_MISMATCH = "device_mismatch"
    PROFILE_MISMATCH = "profile_mismatch"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    IMPOSSIBLE_VALUE = "impossible_value"
    INVALID_TIMESTAMP = "invalid_timestamp"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    # The same member name twice in one JSON object: parsers disagree on which one counts,
    # so a payload could name one device to a gateway's check and another to us.
    DUPLICATE_KEY = "duplicate_key"
    STORE_REJECTED = "store_rejected"
    # A decoder defect met this input; kept so the input can reproduce it.
    DECODER_ERROR = "decoder_error"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message kept for an operator: what came in and why it was refused."""

    topic: str
    payload: bytes
    reason: RejectReason
    detail: str
    received_at: float
    device_id: str | None = None


@dataclass(slots=True)
class IngestStats:
    """Counters of the ingestion stage, read by the live view and (later) /metrics."""

    received: int = 0
    stored: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    # Messages on topics that every matching profile excludes (a bridge's own topics):
    # acknowledged and dropped on purpose, neither read nor dead-lettered.
    ignored_topic: int = 0
    # Messages that only say "no value now" (every field an `absent` word): acknowledged,
    # nothing stored, nothing dead-lettered.
    no_value: int = 0
    # Accepted but not stored, by cause (disk_full: telemetry given up so alarms flow).
    dropped: dict[str, int] = field(default_factory=dict)
    stored_by_kind: dict[str, int] = field(default_factory=dict)
    # Steps retried until they succeed ("store_write", "rules_gate"): the last error of each
    # one failing now, and since when (the ingest clock's monotonic()) its current batch has
    # been in it.
    failing: dict[str, str] = field(default_factory=dict)
    busy_since: dict[str, float] = field(default_factory=dict)
    last_commit: float | None = None  # the ingest clock's monotonic() at the last commit

    def reject(self, reason: RejectReason) -> None:
        self.rejected[reason.value] = self.rejected.get(reason.value, 0) + 1

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


class Severity(enum.IntEnum):
    """How urgent an incident is; ordered, so a raise is a comparison.

    `maintenance` goes to a daily digest and pages nobody; `emergency` is above critical for
    a life already in danger (a fall followed by no movement).
    """

    MAINTENANCE = 0
    INFO = 1
    WARNING = 2
    CRITICAL = 3
    EMERGENCY = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r} (one of: "
                             f"{', '.join(s.label for s in cls)})") from None

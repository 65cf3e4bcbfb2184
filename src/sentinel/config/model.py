"""The settings model tree. Unknown keys are errors everywhere (extra="forbid")."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from sentinel import zone


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class TlsSettings(_Section):
    enabled: bool = False
    # The CA that issued the broker's certificate (PEM); only it is trusted. None: the
    # system's CAs. The certificate must also name [mqtt] host (checked).
    ca_file: Path | None = None
    # A client certificate and its key, for a broker that requires one.
    cert_file: Path | None = None
    key_file: Path | None = None
    # Only for a lab broker with a self-signed certificate; never in production.
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _key_with_cert(self) -> TlsSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is the private key of cert_file: set cert_file too")
        return self


class ReconnectSettings(_Section):
    min_delay: float = Field(default=0.5, gt=0)
    max_delay: float = Field(default=30.0, gt=0)


class MqttSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str = Field(default="sentinel", min_length=1, max_length=128)
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive: int = Field(default=30, ge=5, le=3600)
    # Broker keeps the session (subscriptions and queued QoS 1 messages) this long offline.
    session_expiry: int = Field(default=7 * 24 * 3600, ge=0)
    # MQTT 5 Receive Maximum: QoS 1 messages the broker may have in flight to us unacked.
    # Mosquitto honours it; under 3.1.1 the broker's max_inflight_messages (default 20) rules.
    receive_maximum: int = Field(default=5000, ge=1, le=65535)
    # MQTT 5 Maximum Packet Size: larger messages are dropped by the broker, unseen (not
    # dead-lettered); keep it well above [ingest] max_payload_bytes.
    maximum_packet_size: int = Field(default=16 * 1024 * 1024, ge=1024, le=268_435_455)
    qos: Literal[0, 1] = 1
    # Empty: subscribe to every topic filter the loaded device profiles match.
    topics: list[str] = Field(default_factory=list)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    reconnect: ReconnectSettings = Field(default_factory=ReconnectSettings)

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set either password (environment) or password_file, not both")
        return self


class SqliteSettings(_Section):
    path: Path = Path("readings.sqlite3")
    retention_days: float = Field(default=90, gt=0)
    # "normal": a commit survives a crash of the daemon; "full": also a power cut (fsync).
    synchronous: Literal["normal", "full"] = "normal"


class InfluxSettings(_Section):
    url: str = "http://127.0.0.1:8086"
    org: str = "sentinel"
    bucket: str = "sentinel"
    token: SecretStr | None = None
    token_file: Path | None = None
    batch_size: int = Field(default=5000, ge=1, le=100_000)
    flush_interval: float = Field(default=1.0, gt=0)
    timeout: float = Field(default=10.0, gt=0)
    gzip: bool = True
    retry_min_delay: float = Field(default=0.5, gt=0)
    retry_max_delay: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _one_token_source(self) -> InfluxSettings:
        if self.token is not None and self.token_file is not None:
            raise ValueError("set either token (environment) or token_file, not both")
        return self


class SpoolSettings(_Section):
    """The durable on-disk queue in front of a remote time-series database."""

    path: Path = Path("spool.sqlite3")
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    # Above this share of max_bytes the spool is reported loudly as nearly full.
    warn_ratio: float = Field(default=0.8, gt=0, lt=1)


class StoreSettings(_Section):
    backend: Literal["sqlite", "influxdb"] = "sqlite"
    sqlite: SqliteSettings = Field(default_factory=SqliteSettings)
    influxdb: InfluxSettings = Field(default_factory=InfluxSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    # Room kept back on the state disk (a ballast file) for incident and notification
    # commits when the disk fills up; 0 turns it off.
    reserve_bytes: int = Field(default=32 * 1024 * 1024, ge=0)


class IngestSettings(_Section):
    max_payload_bytes: int = Field(default=64 * 1024, ge=16)
    max_future_skew: float = Field(default=300.0, ge=0)
    # Readings older than this (by device timestamp) are refused: replays, stuck clocks.
    max_age: float = Field(default=7 * 24 * 3600.0, gt=0)
    # Largest group committed (and then acknowledged) at once.
    batch_max: int = Field(default=500, ge=1, le=50_000)
    # Bound on messages received but not yet committed; past it the socket is not read.
    queue_max: int = Field(default=5000, ge=10)
    deadletter_keep_days: float = Field(default=30, gt=0)


class DevicesSettings(_Section):
    inventory: list[Path] = Field(default_factory=lambda: [Path("../devices/shuibei.csv")])
    profile_dirs: list[Path] = Field(default_factory=lambda: [Path("../devices/profiles")])
    kind_dirs: list[Path] = Field(default_factory=list)


class RulesSettings(_Section):
    # Rule files, later ones adding to or replacing rules of earlier ones.
    files: list[Path] = Field(default_factory=lambda: [Path("rules.toml")])
    # How often timers (durations, offline, inactivity, clear holds) are evaluated.
    tick_interval: float = Field(default=1.0, gt=0, le=60)
    # After start-up, offline checks wait this long so devices can report (no restart flood).
    startup_grace: float = Field(default=300.0, ge=0)


class LatencySettings(_Section):
    """The alarm-path time limits of GB 50440, checked for every life-safety incident."""

    # Device time (or receipt, when the device sends no time) -> first delivery accepted.
    accepted_within: float = Field(default=10.0, gt=0)
    # Receipt -> first notification handed to a channel (forwarding).
    handed_within: float = Field(default=3.0, gt=0)


class IncidentSettings(_Section):
    path: Path = Path("incidents.sqlite3")
    # "full": an opened incident survives a power cut, not only a crash.
    synchronous: Literal["normal", "full"] = "full"
    # Publish incident state to MQTT under <topic_prefix>/<community>/incidents/<id>.
    publish: bool = True
    topic_prefix: str = Field(default="sentinel", pattern=r"^[^#+]+$")
    # Over a limit, a `latency_budget_exceeded` system incident names the alarm.
    latency: LatencySettings = Field(default_factory=LatencySettings)


class EscalationSettings(_Section):
    # Contacts and rosters; escalation policies (relative to the config file).
    oncall: Path = Path("oncall.toml")
    policies: Path = Path("escalation.toml")
    # How often timers (next step, repeats, acknowledgement timeouts, digests) are checked.
    tick_interval: float = Field(default=1.0, gt=0, le=60)


class NotifySettings(_Section):
    # Seconds one delivery attempt may take (connect + answer) before it counts as failed.
    timeout: float = Field(default=10.0, gt=0, le=300)
    # Attempts on one channel before the contact's next channel is tried.
    attempts: int = Field(default=3, ge=1, le=20)
    retry_min_delay: float = Field(default=2.0, gt=0)
    retry_max_delay: float = Field(default=60.0, gt=0)
    # Deliveries in flight at once (each runs on a worker thread).
    concurrency: int = Field(default=8, ge=1, le=64)
    # Where apprise runs: "process", a child process of its own, so that its CPU never
    # waits for the event loop's GIL (and the loop never waits for it); "thread", worker
    # threads of the daemon (one process less, about 40 MB).
    sender: Literal["process", "thread"] = "process"
    # Sent, failed and withdrawn messages are deleted after this many days (attempts stay).
    keep_days: float = Field(default=30, gt=0)


class ControlSettings(_Section):
    """The daemon's HTTP control API and one-tap acknowledgement links."""

    enabled: bool = True
    # The CLI's door: a Unix socket; its file permissions (0660, the daemon's group) decide
    # who may act, so commands on the box need no token. Empty: <state_dir>/control.sock.
    socket: Path | None = None
    # HTTP on host:port for the board, one-tap links and remote tools (bearer token).
    http: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8730, ge=0, le=65535)
    # Bearer token for the API; none: generated once into <state_dir>/control.token (0600).
    token: SecretStr | None = None
    token_file: Path | None = None
    # Key that signs acknowledgement links; none: generated into <state_dir>/link.key (0600).
    link_key_file: Path | None = None
    # Base of the links in notifications, as the staff's phones reach the daemon
    # (usually a reverse proxy); empty: http://<host>:<port>.
    public_url: str = ""
    link_ttl: float = Field(default=24 * 3600.0, gt=0)
    # The board answers a client's wrong logins after a growing delay, at most this long
    # (seconds); the right token is never refused or delayed.
    login_delay_max: float = Field(default=5.0, ge=0, le=60)

    @model_validator(mode="after")
    def _one_token_source(self) -> ControlSettings:
        if self.token is not None and self.token_file is not None:
            raise ValueError("set either token (environment) or token_file, not both")
        return self

    @property
    def socket_path(self) -> Path:
        """Set by the loader (<state_dir>/control.sock unless configured)."""
        if self.socket is None:
            raise RuntimeError("control.socket is resolved when the configuration is loaded")
        return self.socket

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


class DistrictSettings(_Section):
    """The box's uplink to a district (street office): see sentinel.district.wire.

    Off unless `community` is set. The box's Mosquitto bridges `<topic_prefix>/<community>/#`
    to the district broker (config/mosquitto/bridge.conf); the daemon only talks to its
    local broker.
    """

    # This box's community id on the district broker: one topic level, [A-Za-z0-9_-].
    # Empty: no district (incidents are still published per [incidents] publish).
    community: str = Field(default="", pattern=r"^[A-Za-z0-9_-]{0,64}$")
    # The district's public base URL: with it, one-tap links in pages point at
    # <public_url>/c/<community>/a/<token> (the district relays them to this box).
    public_url: str = ""
    # Key shared with the district that signs its commands to this box (>= 16 bytes);
    # or SENTINEL_DISTRICT__COMMAND_KEY.
    command_key: SecretStr | None = None
    command_key_file: Path | None = None
    # Seconds between retained heartbeats on <prefix>/<community>/heartbeat.
    heartbeat_interval: float = Field(default=15.0, ge=1, le=60)
    # Publish one-minute aggregates of readings per device on <prefix>/<community>/aggregates.
    aggregates: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.community)

    @model_validator(mode="after")
    def _one_key_source(self) -> DistrictSettings:
        if self.command_key is not None and self.command_key_file is not None:
            raise ValueError("set either command_key (environment) or command_key_file, not both")
        return self


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Settings(_Section):
    """The whole configuration of one sentinel daemon."""

    state_dir: Path = Path("/var/lib/sentinel")
    language: Literal["zh", "en"] = "zh"
    # The community's time zone (an IANA name): every time shown to a person, and the
    # default of the on-call file's and the daytime rules' zones.
    timezone: str = zone.DEFAULT
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    devices: DevicesSettings = Field(default_factory=DevicesSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    incidents: IncidentSettings = Field(default_factory=IncidentSettings)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    control: ControlSettings = Field(default_factory=ControlSettings)
    district: DistrictSettings = Field(default_factory=DistrictSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return zone.validate(value)

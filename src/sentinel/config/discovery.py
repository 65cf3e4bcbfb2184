"""Bring devices in: inventory rows guessed from what bridges announce on MQTT.

Zigbee2MQTT publishes its device list, retained, on `<base>/bridge/devices`; Home Assistant
MQTT discovery has each device announce its entities, retained, on
`<prefix>/<component>/[<node_id>/]<object_id>/config` (or the whole device on
`<prefix>/device/<object_id>/config`). `sentinel devices import` reads those once and
prints inventory rows for a person to review: the kind is a guess from what the device
exposes, the place is whatever the person gives on the command line.

The parsing and guessing are pure functions (`zigbee2mqtt_candidates`,
`homeassistant_candidates`, `inventory_csv`); `read_retained` is the one-shot MQTT reader.
What cannot become a row is a `Note` (an i18n key and its values) for the reviewer.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import ssl
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from sentinel.config.inventory import DEVICE_ID_PATTERN
from sentinel.config.model import TlsSettings

# The columns of the rows printed, in this order; several aliases in one cell are joined
# by "|" (the inventory's CSV convention).
COLUMNS = ("id", "kind", "community", "compound", "building", "floor", "unit", "grid",
           "location", "profile", "aliases")
_VALID_ID = re.compile(DEVICE_ID_PATTERN)


@dataclass(frozen=True, slots=True)
class Note:
    """Something the reviewer should know: an i18n key (`import.note.<key>`) and values."""

    key: str
    values: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One device as an inventory row to review, and how it was guessed (`why`)."""

    id: str
    kind: str
    profile: str
    aliases: tuple[str, ...]
    why: Note


@dataclass(slots=True)
class Found:
    """Rows to review and notes on what did not become a row."""

    candidates: list[Candidate] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Place:
    """The place columns a person gives for every row (empty: fill in by hand)."""

    community: str = ""
    compound: str = ""
    building: str = ""
    grid: str = ""


def inventory_csv(candidates: Iterable[Candidate], place: Place = Place()) -> str:
    """The candidates as inventory CSV: a header and one row each."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for c in candidates:
        writer.writerow([c.id, c.kind, place.community, place.compound, place.building, "",
                         "", place.grid, "", c.profile, "|".join(c.aliases)])
    return out.getvalue()


def _unique_ids(found: Found) -> Found:
    """Make generated ids unique in the output (a second `x` becomes `x-2`)."""
    seen: set[str] = set()
    unique: list[Candidate] = []
    for c in found.candidates:
        new_id, n = c.id, 1
        while new_id in seen:
            n += 1
            suffix = f"-{n}"
            new_id = c.id[:64 - len(suffix)] + suffix
        seen.add(new_id)
        unique.append(c if new_id == c.id else Candidate(new_id, c.kind, c.profile, c.aliases,
                                                         c.why))
    return Found(unique, found.notes)


def _slug(text: str) -> str:
    """An inventory id made of `text`'s ASCII letters and digits ("" if it has none)."""
    slug = re.sub(r"[^A-Za-z0-9_.:-]+", "-", text).strip("-_.:")
    return slug[:64].rstrip("-_.:")


def device_id(*names: str) -> str:
    """The first of `names` that is a valid inventory id; else one made of the ASCII of
    the first that has letters in it (`1栋/3楼` would give a meaningless `1-3`); else ""."""
    for name in names:
        if _VALID_ID.fullmatch(name):
            return name
    return next((slug for slug in map(_slug, names) if re.search("[A-Za-z]", slug)), "")


# -- Zigbee2MQTT ---------------------------------------------------------------------------

# Expose properties that identify a kind, strongest first: an alarm reporting both smoke
# and carbon monoxide is a smoke alarm. The shipped `zigbee2mqtt` profile reads these.
_Z2M_KINDS: tuple[tuple[str, str], ...] = (
    ("smoke", "smoke"), ("gas", "gas"), ("gas_density", "gas"), ("gas_value", "gas"),
    ("carbon_monoxide", "gas"), ("co", "gas"))
# Properties every kind of radio device reports: they say nothing of what it is.
_Z2M_COMMON = frozenset({"battery", "battery_low", "battery_state", "voltage", "linkquality",
                         "tamper", "update", "update_available", "last_seen"})


def expose_properties(exposes: Any) -> list[str]:
    """The state properties of Zigbee2MQTT exposes, nested features included, in order."""
    found: list[str] = []

    def walk(items: Any) -> None:
        if not isinstance(items, list):
            return
        for item in items:
            if not isinstance(item, dict):
                continue
            prop = item.get("property")
            if isinstance(prop, str) and item.get("type") != "composite" and prop not in found:
                found.append(prop)
            walk(item.get("features"))

    walk(exposes)
    return found


def zigbee2mqtt_candidates(payload: bytes | str, profile: str = "zigbee2mqtt") -> Found:
    """Rows for the end devices of a `bridge/devices` message (the coordinator skipped).

    Raises ValueError when the payload is not Zigbee2MQTT's device list.
    """
    try:
        devices = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(devices, list):
        raise ValueError("expected a JSON list of devices")
    found = Found()
    for entry in devices:
        if not isinstance(entry, dict) or not isinstance(entry.get("ieee_address"), str):
            continue
        if entry.get("type") == "Coordinator":
            continue
        ieee: str = entry["ieee_address"]
        friendly = entry.get("friendly_name")
        name = friendly if isinstance(friendly, str) and friendly else ieee
        # Who it is for the reviewer: the name on the bridge, with the address if different.
        what = {"name": name if name == ieee else f"{name} ({ieee})"}
        definition = entry.get("definition")
        if entry.get("disabled"):
            found.notes.append(Note("disabled", what))
            continue
        if entry.get("interviewing") or entry.get("interview_completed") is False:
            found.notes.append(Note("interview", what))
            continue
        if not isinstance(definition, dict):
            found.notes.append(Note("no_definition", what))
            continue
        model = " ".join(str(definition.get(k) or "") for k in ("vendor", "model")).strip()
        what = {**what, "model": " ".join(filter(None, (
            model, str(definition.get("description") or "")))) or "-"}
        properties = expose_properties(definition.get("exposes"))
        guess = next(((p, k) for p, k in _Z2M_KINDS if p in properties), None)
        if guess is None:
            own = [p for p in properties if p not in _Z2M_COMMON] or properties
            found.notes.append(Note("unsupported", {**what, "exposes": ", ".join(own[:8])}))
            continue
        # The friendly name is what the bridge publishes under: the id if it is a valid
        # one, else an alias of the IEEE address (stable across renames and re-pairing).
        id_ = device_id(name, ieee)
        aliases = (name,) if name != id_ else ()
        found.candidates.append(Candidate(id_, guess[1], profile, aliases, Note(
            "z2m_row", {**what, "name": name, "id": id_, "kind": guess[1],
                        "property": guess[0]})))
    return _unique_ids(found)


# -- Home Assistant MQTT discovery ---------------------------------------------------------

# The abbreviations of the keys read here (Home Assistant's MQTT discovery documentation).
_ABBREVIATIONS = {"dev": "device", "dev_cla": "device_class", "stat_t": "state_topic",
                  "unit_of_meas": "unit_of_measurement", "val_tpl": "value_template",
                  "uniq_id": "unique_id", "obj_id": "object_id", "o": "origin",
                  "p": "platform", "cmps": "components"}
_DEVICE_ABBREVIATIONS = {"ids": "identifiers", "cns": "connections", "mf": "manufacturer",
                         "mdl": "model"}
# Water pressure is given in these; hPa, mbar, mmHg and inHg are air pressure (weather).
_WATER_PRESSURE_UNITS = frozenset({"kPa", "MPa", "bar", "psi"})


def _expand(config: Mapping[str, Any], table: Mapping[str, str]) -> dict[str, Any]:
    return {table.get(k, k): v for k, v in config.items()}


def _entity(config: Mapping[str, Any]) -> dict[str, Any]:
    """One entity's configuration with abbreviations and the `~` base topic expanded."""
    entity = _expand(config, _ABBREVIATIONS)
    base = entity.get("~")
    if isinstance(base, str):
        for key, value in entity.items():
            if key.endswith("_topic") and isinstance(value, str):
                if value.startswith("~"):
                    value = base + value[1:]
                if value.endswith("~"):
                    value = value[:-1] + base
                entity[key] = value
    device = entity.get("device")
    entity["device"] = _expand(device, _DEVICE_ABBREVIATIONS) if isinstance(device, dict) \
        else {}
    origin = entity.get("origin")
    entity["origin"] = origin if isinstance(origin, dict) else {}
    return entity


def discovery_entities(topic: str, payload: bytes | str, prefix: str = "homeassistant"
                       ) -> list[dict[str, Any]]:
    """The entities one discovery message announces, each with its `component`.

    Raises ValueError for a message that is not a discovery configuration. An empty
    payload (an entity removed) announces none.
    """
    levels = topic.split("/")
    depth = len(prefix.split("/"))
    if levels[:depth] != prefix.split("/") or levels[-1] != "config" or \
            len(levels) not in (depth + 3, depth + 4):
        raise ValueError("not a discovery topic")
    component = levels[depth]
    if not payload:
        return []
    try:
        config = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError("expected a JSON object")
    entity = _entity(config)
    if component != "device":
        return [{**entity, "component": component, "topic": topic}]
    # Device discovery: one message, every entity under `components`; the other keys
    # (device, origin, a shared state_topic...) apply to each.
    shared = {k: v for k, v in config.items() if k not in ("cmps", "components")}
    components = entity.get("components")
    if not isinstance(components, dict):
        raise ValueError("device discovery without components")
    entities = []
    for own in components.values():
        if isinstance(own, dict):
            one = _entity({**shared, **own})
            entities.append({**one, "component": one.get("platform", ""), "topic": topic})
    return entities


def _identifiers(entity: Mapping[str, Any]) -> list[str]:
    device = entity["device"]
    ids = device.get("identifiers")
    found = [ids] if isinstance(ids, str) else [str(i) for i in ids or () if i]
    found += [f"{c[0]}:{c[1]}" for c in device.get("connections") or ()
              if isinstance(c, list) and len(c) == 2]
    return found or [str(entity.get("unique_id") or entity["topic"])]


def _group_by_device(entities: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Entities grouped by device: two entities sharing any identifier are one device."""
    groups: list[list[dict[str, Any]]] = []
    where: dict[str, int] = {}
    for entity in entities:
        ids = _identifiers(entity)
        index = next((where[i] for i in ids if i in where), None)
        if index is None:
            index = len(groups)
            groups.append([])
        groups[index].append(entity)
        for i in ids:
            where.setdefault(i, index)
    return groups


def _entity_kind(entity: Mapping[str, Any]) -> tuple[str | None, Note | None]:
    """The kind one entity says its device is, or a note on why it says none."""
    component, device_class = entity["component"], entity.get("device_class")
    unit = str(entity.get("unit_of_measurement") or "")
    if component == "binary_sensor" and device_class in ("smoke", "gas", "carbon_monoxide"):
        return ("smoke" if device_class == "smoke" else "gas"), None
    if component == "sensor" and device_class == "carbon_monoxide":
        return "gas", None
    if component == "sensor" and device_class == "pressure":
        if unit in _WATER_PRESSURE_UNITS:
            return "hydrant_pressure", None
        return None, Note("air_pressure", {"unit": unit or "?"})
    return None, None


_KIND_ORDER = ("smoke", "gas", "hydrant_pressure")


def homeassistant_candidates(messages: Iterable[tuple[str, bytes]],
                             prefix: str = "homeassistant") -> Found:
    """Rows for the devices that Home Assistant discovery messages announce, one per device
    (its entities grouped by the device's identifiers)."""
    found = Found()
    entities: list[dict[str, Any]] = []
    for topic, payload in messages:
        try:
            entities += discovery_entities(topic, payload, prefix)
        except ValueError as exc:
            found.notes.append(Note("bad_discovery", {"topic": topic, "reason": str(exc)}))
    for group in _group_by_device(entities):
        device: dict[str, Any] = next((e["device"] for e in group if e["device"]), {})
        name = str(device.get("name") or group[0].get("name") or group[0]["topic"])
        ids = _identifiers(group[0])
        what = {"name": name, "model": " ".join(str(device.get(k) or "") for k in (
            "manufacturer", "model")).strip() or "-"}
        guesses: list[tuple[str, dict[str, Any]]] = []
        said: list[Note] = []
        for entity in group:
            kind, note = _entity_kind(entity)
            if kind is not None:
                guesses.append((kind, entity))
            elif note is not None:
                said.append(Note(note.key, {**what, **note.values}))
        if not guesses:
            # Why not, once: what an entity said about itself, else the entities it has.
            classes = sorted({f"{e['component']}:{e.get('device_class') or '-'}" for e in group})
            found.notes += said or [Note("ha_unsupported", {**what,
                                                            "entities": ", ".join(classes)})]
            continue
        kind, entity = min(guesses, key=lambda g: _KIND_ORDER.index(g[0]))
        state_topic = str(entity.get("state_topic") or "")
        origin = str(entity["origin"].get("name") or "")
        if origin.lower() == "zigbee2mqtt":
            # Its identifiers are zigbee2mqtt_<IEEE address>: the id `devices import
            # zigbee2mqtt` gives the same device.
            ids = [i.removeprefix("zigbee2mqtt_") for i in ids]
        id_ = device_id(name, *ids) or f"HA-{len(found.candidates) + 1:04d}"
        profile = ""
        aliases: tuple[str, ...] = ()
        if origin.lower() == "zigbee2mqtt" and "/" in state_topic:
            # Zigbee2MQTT announces its devices to Home Assistant too: the state topic is
            # <base>/<friendly name>, which the zigbee2mqtt profile reads.
            profile = "zigbee2mqtt"
            wire = state_topic.split("/", 1)[1]
            aliases = (wire,) if wire != id_ else ()
        values = {**what, "id": id_, "kind": kind, "device_class": str(entity.get(
            "device_class")), "state_topic": state_topic or "?"}
        found.candidates.append(Candidate(id_, kind, profile, aliases, Note(
            "ha_row" if profile else "ha_row_no_profile", values)))
    return _unique_ids(found)


# -- reading retained messages -------------------------------------------------------------

class RetainedReadError(Exception):
    """Reading from the broker failed: an i18n key (`import.<key>`) and its values."""

    def __init__(self, key: str, **values: str) -> None:
        super().__init__(key, values)
        self.key = key
        self.values = values


@dataclass(frozen=True, slots=True)
class Broker:
    """Where and how to connect."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    protocol: Literal["5", "3.1.1"] = "5"

    @property
    def url(self) -> str:
        """The address for messages (never the password)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def parse_broker(text: str) -> Broker:
    """A broker from `mqtt://[user[:password]@]host[:port]` (`mqtts://` for TLS with the
    system's CAs), or plain `host[:port]`. Raises ValueError."""
    parts = urlsplit(text if "://" in text else f"mqtt://{text}")
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname or \
            parts.path not in ("", "/") or parts.query:
        raise ValueError(text)
    tls = ssl.create_default_context() if parts.scheme in ("mqtts", "ssl") else None
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise ValueError(text) from None
    return Broker(parts.hostname, port,
                  unquote(parts.username) if parts.username is not None else None,
                  unquote(parts.password) if parts.password is not None else None, tls)


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """A TLS context that trusts what [mqtt.tls] trusts (its CA, or the system's).

    The daemon's client certificate is left out: it is the daemon's identity, and the
    import connects as an account of its own.
    """
    context = ssl.create_default_context(
        cafile=str(tls.ca_file) if tls.ca_file is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(slots=True)
class _Session:
    topics: Sequence[str]
    fence_topic: str
    messages: dict[str, bytes] = field(default_factory=dict)
    connected: bool = False
    first_mid: int | None = None
    fence_mid: int | None = None
    fenced: bool = False
    refused: str | None = None


def read_retained(broker: Broker, topics: Sequence[str], timeout: float) -> dict[str, bytes]:
    """The retained messages on `topics` (filters), by topic: connect, subscribe, collect
    until the broker has sent every retained message, disconnect.

    A broker sends the retained messages of a subscription right after its SUBACK, in
    order; a second subscription's SUBACK therefore arrives after all of them and marks
    the end. With nothing retained, waits until `timeout` for a message published live
    (a bridge that is starting). Raises RetainedReadError.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

    session = _Session(topics, f"sentinel/import/{uuid.uuid4().hex}")
    v5 = broker.protocol == "5"
    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"sentinel-import-{os.getpid()}-{uuid.uuid4().hex[:6]}",
                         protocol=MQTTProtocolVersion.MQTTv5 if v5 else
                         MQTTProtocolVersion.MQTTv311,
                         clean_session=None if v5 else True)
    client.connect_timeout = max(timeout, 1.0)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls is not None:
        client.tls_set_context(broker.tls)

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            session.refused = str(reason)
            return
        session.connected = True
        # QoS 0: retained messages go out at once, in order, never held back behind an
        # in-flight window, so the fence below cannot overtake them.
        session.first_mid = client.subscribe([(t, 0) for t in session.topics])[1]

    def on_subscribe(client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if mid == session.first_mid:
            if any(r.is_failure for r in reasons):
                session.refused = f"subscription refused: {reasons[0]}"
                return
            session.fence_mid = client.subscribe(session.fence_topic, 0)[1]
        elif mid == session.fence_mid:
            session.fenced = True  # refused or not: its SUBACK is all the fence needs

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        if message.topic != session.fence_topic and message.payload:
            session.messages[message.topic] = message.payload

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    deadline = time.monotonic() + timeout
    try:
        client.connect(broker.host, broker.port, keepalive=max(5, int(timeout) + 5))
    except (OSError, ssl.SSLError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise RetainedReadError("connect_failed", broker=broker.url, reason=reason) from None
    try:
        for _ in _until(deadline):
            rc = client.loop(timeout=0.05)
            if session.refused is not None:
                raise RetainedReadError("connect_failed", broker=broker.url,
                                        reason=session.refused)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise RetainedReadError("connect_failed", broker=broker.url,
                                        reason=mqtt.error_string(rc))
            if session.fenced and session.messages:
                break
    finally:
        client.disconnect()
    if not session.connected:
        raise RetainedReadError("connect_failed", broker=broker.url,
                                reason=f"no answer (CONNACK) within {timeout:g} s")
    return session.messages


def _until(deadline: float) -> Iterator[None]:
    while time.monotonic() < deadline:
        yield None

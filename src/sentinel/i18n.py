"""User-facing text: Simplified Chinese by default, English on request."""

from __future__ import annotations

from typing import Literal

Language = Literal["zh", "en"]

_MESSAGES: dict[str, dict[Language, str]] = {
    "kind.smoke": {"zh": "烟感", "en": "smoke"},
    "kind.gas": {"zh": "燃气", "en": "gas"},
    "kind.hydrant_pressure": {"zh": "消火栓水压", "en": "hydrant pressure"},
    "kind.water_level": {"zh": "消防水箱液位", "en": "tank level"},
    "kind.elderly_watch": {"zh": "长者手表", "en": "elderly watch"},
    "live.header": {"zh": "水贝社区 实时接入  设备 {devices} 台  存储 {store}",
                    "en": "live ingestion  devices {devices}  store {store}"},
    "live.status": {"zh": "已接收 {received}  已存储 {stored}  拒收 {rejected}  "
                          "速率 {rate}/秒  {kinds}",
                    "en": "received {received}  stored {stored}  rejected {rejected}  "
                          "rate {rate}/s  {kinds}"},
    "live.rejects": {"zh": "  拒收原因: {reasons}", "en": "  rejected by reason: {reasons}"},
    "live.alarm": {"zh": "⚠ {time} {kind}报警 {device} {where}: {what}",
                   "en": "⚠ {time} {kind} alarm {device} {where}: {what}"},
    "what.alarm": {"zh": "报警", "en": "alarm"},
    "what.sos": {"zh": "SOS 求助", "en": "SOS"},
    "what.fall": {"zh": "跌倒", "en": "fall"},
    "what.pressure": {"zh": "水压 {value:.3f} MPa", "en": "pressure {value:.3f} MPa"},
    "what.level": {"zh": "液位 {value:.2f} m", "en": "level {value:.2f} m"},
    "what.concentration": {"zh": "浓度 {value:.1f} %LEL", "en": "concentration {value:.1f} %LEL"},
    "check.ok": {"zh": "配置有效: {devices} 台设备, {profiles} 个设备协议, {kinds} 种设备类型",
                 "en": "configuration valid: {devices} devices, {profiles} profiles, "
                       "{kinds} kinds"},
    "check.failed": {"zh": "发现 {count} 个问题:", "en": "{count} problem(s) found:"},
    "deadletter.none": {"zh": "死信为空", "en": "no dead letters"},
    "deadletter.header": {"zh": "时间 | 原因 | 设备 | 主题 | 说明 | 报文",
                          "en": "time | reason | device | topic | detail | payload"},
    "demo.broker_started": {"zh": "已启动本地 MQTT 代理 {host}:{port}",
                            "en": "started a local MQTT broker at {host}:{port}"},
    "demo.broker_found": {"zh": "使用已运行的 MQTT 代理 {host}:{port}",
                          "en": "using the running MQTT broker at {host}:{port}"},
    "demo.stop_hint": {"zh": "按 Ctrl-C 停止", "en": "press Ctrl-C to stop"},
    "demo.stopped": {"zh": "已停止. 存储 {stored} 条读数, 拒收 {rejected} 条",
                     "en": "stopped. {stored} readings stored, {rejected} rejected"},
    "sim.progress": {"zh": "已发布 {readings} 条读数 ({rate}/秒)",
                     "en": "published {readings} readings ({rate}/s)"},
    "sim.done": {"zh": "完成: 发布 {readings} 条读数, {messages} 条消息, 用时 {elapsed:.1f} 秒",
                 "en": "done: {readings} readings in {messages} messages, {elapsed:.1f} s"},
    "error.config": {"zh": "配置错误", "en": "configuration error"},
}


def t(key: str, lang: Language = "zh", **values: object) -> str:
    """The message `key` in `lang`, formatted with `values`."""
    entry = _MESSAGES[key]
    return entry.get(lang, entry["en"]).format(**values)


def kind_name(kind: str, lang: Language = "zh") -> str:
    entry = _MESSAGES.get(f"kind.{kind}")
    return entry[lang] if entry else kind

"""User-facing text: Simplified Chinese by default, English on request.

One catalogue (below) holds the texts of the code. Display names written in configuration
(a kind file's or a rule's `label`, a field's `label`) are laid over it by
`configure_labels` when the configuration is loaded: a configured name wins, then the
catalogue, then the bare name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sentinel import zone

Language = Literal["zh", "en"]


class Label(BaseModel):
    """A display name in Chinese and English, as written in configuration.

    One language may be left out: the other stands in for it (a site that writes only
    Chinese names still shows them to English readers, rather than a bare identifier).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    zh: str | None = Field(default=None, min_length=1)
    en: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _some_text(self) -> Label:
        if self.zh is None and self.en is None:
            raise ValueError("a label needs zh and/or en")
        return self

    def texts(self) -> dict[Language, str]:
        zh = self.zh if self.zh is not None else self.en
        en = self.en if self.en is not None else self.zh
        assert zh is not None and en is not None
        return {"zh": zh, "en": en}

    def text(self, lang: Language) -> str:
        return self.texts()[lang]

_MESSAGES: dict[str, dict[Language, str]] = {
    "kind.smoke": {"zh": "烟感", "en": "smoke"},
    "kind.gas": {"zh": "燃气", "en": "gas"},
    "kind.hydrant_pressure": {"zh": "消火栓水压", "en": "hydrant pressure"},
    "kind.water_level": {"zh": "消防水箱液位", "en": "tank level"},
    "kind.elderly_watch": {"zh": "长者手表", "en": "elderly watch"},
    # Kinds of incidents that are no device's: a correlation group, sentinel itself.
    "kind.group": {"zh": "关联事件", "en": "group"},
    "kind.system": {"zh": "系统", "en": "system"},
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
    "check.oncall": {"zh": "值班: {contacts} 名联系人, {rosters} 个排班, {policies} 条升级策略",
                     "en": "on call: {contacts} contacts, {rosters} rosters, "
                           "{policies} escalation policies"},
    "check.warnings": {"zh": "{count} 个警告:", "en": "{count} warning(s):"},
    "oncall.header": {"zh": "{at} 值班表 (角色 | 区域 | 值班人员 → 交班时间)",
                      "en": "on duty at {at} (role | area | who → until)"},
    "oncall.nobody": {"zh": "⚠ 无人值班", "en": "⚠ nobody"},
    "oncall.bad_time": {"zh": "无法识别的时间: {value}", "en": "cannot read the time {value!r}"},
    "role.grid_worker": {"zh": "网格员", "en": "grid worker"},
    "role.property": {"zh": "物业", "en": "property management"},
    "role.duty_officer": {"zh": "社区值班", "en": "community duty officer"},
    "role.street_office": {"zh": "街道", "en": "street office"},
    "role.fire_liaison": {"zh": "消防联络员", "en": "fire liaison"},
    "role.elder_contact": {"zh": "老人联系人", "en": "elder's contact"},
    "check.failed": {"zh": "发现 {count} 个问题:", "en": "{count} problem(s) found:"},
    "deadletter.none": {"zh": "死信为空", "en": "no dead letters"},
    "deadletter.header": {"zh": "时间 | 原因 | 设备 | 主题 | 说明 | 报文",
                          "en": "time | reason | device | topic | detail | payload"},
    "demo.broker_started": {"zh": "已启动本地 MQTT 代理 {host}:{port}",
                            "en": "started a local MQTT broker at {host}:{port}"},
    "demo.broker_shared": {"zh": "未安装 mosquitto, 使用已运行的 MQTT 代理 {host}:{port} "
                                 "(其他发布者的数据会混入演示)",
                           "en": "mosquitto is not installed: using the broker running at "
                                 "{host}:{port} (anything else publishing there mixes into "
                                 "the demo)"},
    "demo.cannot_start": {"zh": "演示无法启动 (缺少 MQTT 代理): 请运行 scripts/demo.sh "
                                "(会自动安装 mosquitto), 或 apt-get install mosquitto",
                          "en": "the demo cannot start: {reason}"},
    "demo.broker_found": {"zh": "使用已运行的 MQTT 代理 {host}:{port}",
                          "en": "using the running MQTT broker at {host}:{port}"},
    "demo.inbox": {"zh": "📨 {time} 已通知 {who}: {title}",
                   "en": "📨 {time} notified {who}: {title}"},
    "demo.inbox_ready": {"zh": "本地收件箱 (代替企业微信/钉钉/邮件): {url}, 通知存于 {path}",
                         "en": "local inbox (standing in for WeCom/DingTalk/e-mail): {url}, "
                               "messages kept in {path}"},
    "demo.stop_hint": {"zh": "按 Ctrl-C 停止", "en": "press Ctrl-C to stop"},
    "demo.board": {"zh": "一屏可视看板 (一次性登录链接, 10 分钟内有效): {url}",
                   "en": "the board (one-time login link, valid 10 minutes): {url}"},
    "demo.board_user": {"zh": "演示值班员", "en": "demo operator"},
    "demo.observe": {"zh": "健康与指标: {url}/healthz  {url}/readyz  {url}/metrics",
                     "en": "health and metrics: {url}/healthz  {url}/readyz  {url}/metrics"},
    "demo.tail": {"zh": "另开终端跟踪事件: SENTINEL_STATE_DIR={state} .venv/bin/sentinel tail "
                        "(或 status / incidents list / board)",
                  "en": "follow from another terminal: SENTINEL_STATE_DIR={state} "
                        ".venv/bin/sentinel tail (or status / incidents list / board)"},
    "demo.stopped": {"zh": "已停止. 存储 {stored} 条读数, 拒收 {rejected} 条",
                     "en": "stopped. {stored} readings stored, {rejected} rejected"},
    "sim.progress": {"zh": "已发布 {readings} 条读数 ({rate}/秒)",
                     "en": "published {readings} readings ({rate}/s)"},
    "sim.done": {"zh": "完成: 发布 {readings} 条读数, {messages} 条消息, 用时 {elapsed:.1f} 秒",
                 "en": "done: {readings} readings in {messages} messages, {elapsed:.1f} s"},
    "error.config": {"zh": "配置错误", "en": "configuration error"},
    "severity.maintenance": {"zh": "维护", "en": "maintenance"},
    "severity.info": {"zh": "提示", "en": "info"},
    "severity.warning": {"zh": "警告", "en": "warning"},
    "severity.critical": {"zh": "严重", "en": "critical"},
    "severity.emergency": {"zh": "紧急", "en": "emergency"},
    "incident.smoke_alarm": {"zh": "烟感报警", "en": "smoke alarm"},
    "incident.gas_leak": {"zh": "燃气泄漏", "en": "gas leak"},
    "incident.device_tamper": {"zh": "设备被拆", "en": "device tampered"},
    "incident.device_fault": {"zh": "设备故障", "en": "device fault"},
    "incident.hydrant_pressure_low": {"zh": "消火栓水压低", "en": "hydrant pressure low"},
    "incident.hydrant_pressure_drop": {"zh": "消火栓水压骤降", "en": "hydrant pressure drop"},
    "incident.tank_level_low": {"zh": "消防水箱液位低", "en": "tank level low"},
    "incident.tank_level_overflow": {"zh": "消防水箱溢流", "en": "tank overflow"},
    "incident.tank_level_falling": {"zh": "消防水箱液位快速下降", "en": "tank level falling"},
    "incident.sos": {"zh": "SOS 求助", "en": "SOS"},
    "incident.fall": {"zh": "跌倒", "en": "fall"},
    "incident.inactive": {"zh": "长时间未活动", "en": "no activity"},
    "incident.watch_not_worn": {"zh": "手表未佩戴", "en": "watch not worn"},
    "incident.heart_rate": {"zh": "心率异常", "en": "heart rate out of band"},
    "incident.detector_offline": {"zh": "探测器离线", "en": "detector offline"},
    "incident.monitor_offline": {"zh": "设备离线", "en": "device offline"},
    "incident.battery_low": {"zh": "电量低", "en": "battery low"},
    "incident.battery_voltage_low": {"zh": "电池电压低", "en": "battery voltage low"},
    "incident.watch_battery_low": {"zh": "手表电量低", "en": "watch battery low"},
    "incident.signal_weak": {"zh": "信号弱", "en": "weak signal"},
    "incident.tamper_cleared": {"zh": "拆除已恢复, 请检查", "en": "tamper cleared, inspect"},
    "incident.self_test": {"zh": "设备自检", "en": "self-test"},
    "incident.fire_confirmed": {"zh": "确认火情", "en": "confirmed fire"},
    "incident.fire_with_gas": {"zh": "火情伴燃气", "en": "fire with gas"},
    "incident.spool_nearly_full": {"zh": "缓存将满", "en": "spool nearly full"},
    "incident.disk_full": {"zh": "状态磁盘已满, 读数暂停存储", "en": "state disk full, readings "
                                                             "not stored"},
    "incident.clock_stepped": {"zh": "系统时钟跳变", "en": "system clock stepped"},
    "incident.latency_budget_exceeded": {"zh": "报警超出时限 (GB 50440)",
                                         "en": "alarm over its time limit (GB 50440)"},
    "event.latency_budget_exceeded": {"zh": "超出报警时限", "en": "over the time limit"},
    "latency.first_notification": {"zh": "首条通知 {s} s（限 {limit} s）",
                                   "en": "first notification {s} s (limit {limit} s)"},
    "latency.first_pending": {"zh": "首条通知 尚未送达（限 {limit} s）",
                              "en": "first notification not yet accepted (limit {limit} s)"},
    "latency.forward": {"zh": "转发 {s} s（限 {limit} s）",
                        "en": "forwarded {s} s (limit {limit} s)"},
    "latency.over": {"zh": " ⚠ 超时", "en": " ⚠ over"},
    "latency.stage.device": {"zh": "设备时间", "en": "device time"},
    "latency.stage.received": {"zh": "收到", "en": "received"},
    "latency.stage.committed": {"zh": "入库", "en": "committed"},
    "latency.stage.handed": {"zh": "交给通道", "en": "handed to channel"},
    "latency.stage.accepted": {"zh": "接收方已收", "en": "accepted"},
    "latency.stage.acknowledged": {"zh": "已确认", "en": "acknowledged"},
    "latency.span.first_notification": {"zh": "报警→首条送达", "en": "alarm → first accepted"},
    "latency.span.forward": {"zh": "收到→交给通道", "en": "received → handed"},
    "latency.span.transport": {"zh": "设备→收到", "en": "device → received"},
    "latency.span.commit": {"zh": "收到→入库", "en": "received → committed"},
    "latency.span.hand_over": {"zh": "入库→交给通道", "en": "committed → handed"},
    "latency.span.delivery": {"zh": "交给通道→送达", "en": "handed → accepted"},
    "latency.span.acknowledge": {"zh": "报警→确认", "en": "alarm → acknowledged"},
    "report.header": {"zh": "报警时延 {since} 至 {until}: 事件 {incidents} 个, "
                            "生命安全报警 {alarms} 个",
                      "en": "alarm latency {since} to {until}: {incidents} incident(s), "
                            "{alarms} life-safety alarm(s)"},
    "report.limit": {"zh": "{what} ≤ {limit} s (GB 50440): 达标 {kept}, 超时 {exceeded}, "
                           "未知 {unknown}",
                     "en": "{what} ≤ {limit} s (GB 50440): kept {kept}, over {exceeded}, "
                           "unknown {unknown}"},
    "report.columns": {"zh": "阶段 | 次数 | p50 | p90 | p99 | 最大 (秒)",
                       "en": "span | count | p50 | p90 | p99 | max (s)"},
    "report.kind": {"zh": "类型 {kind} ({n} 个事件):", "en": "kind {kind} ({n} incidents):"},
    "report.none": {"zh": "该时段没有带时延记录的事件",
                    "en": "no incidents with a latency record in that period"},
    "event.opened": {"zh": "新发生", "en": "opened"},
    "event.severity_raised": {"zh": "升级", "en": "raised"},
    "event.condition_cleared": {"zh": "已恢复正常", "en": "cleared"},
    "event.condition_returned": {"zh": "再次发生", "en": "active again"},
    "event.acknowledged": {"zh": "已确认", "en": "acknowledged"},
    "event.resolved": {"zh": "已解决", "en": "resolved"},
    "event.grouped": {"zh": "归入", "en": "grouped into"},
    "event.attached": {"zh": "关联到", "en": "attached to"},
    "event.flapping": {"zh": "状态抖动, 保持打开", "en": "flapping, held open"},
    "event.flapping_ended": {"zh": "抖动结束", "en": "flapping ended"},
    "event.cancel_refused": {"zh": "取消被拒绝", "en": "cancel refused"},
    "event.repeated": {"zh": "重复", "en": "repeated"},
    "incidents.none": {"zh": "没有未解决的事件", "en": "no open incidents"},
    "incidents.header": {"zh": "编号 | 级别 | 状态 | 事件 | 地点 | 设备 | 发生时间",
                         "en": "id | severity | status | incident | place | device | opened"},
    "incidents.not_found": {"zh": "找不到事件 {id}", "en": "no incident {id}"},
    "window.added": {"zh": "已添加{type} #{id}: {scope} {start} 至 {end}",
                     "en": "added {type} #{id}: {scope} from {start} to {end}"},
    "window.removed": {"zh": "已移除 #{id}", "en": "removed #{id}"},
    "window.not_found": {"zh": "没有生效中的 #{id}", "en": "no active window #{id}"},
    "window.none": {"zh": "没有生效中的屏蔽或演练", "en": "no active silences or drills"},
    "window.silence": {"zh": "屏蔽", "en": "silence"},
    "window.drill": {"zh": "演练", "en": "drill"},
    "window.scope_required": {"zh": "请至少指定一个范围 (--device/--building/--compound/"
                                    "--grid/--community) 或 --kind/--rule",
                              "en": "give at least one scope (--device/--building/--compound/"
                                    "--grid/--community) or --kind/--rule"},
    "window.kinds": {"zh": "设备类型={kinds}", "en": "kinds={kinds}"},
    "window.rules": {"zh": "规则={rules}", "en": "rules={rules}"},
    "window.every": {"zh": "每周 {days} {start}–{end}", "en": "weekly {days} {start}–{end}"},
    "window.life_safety": {"zh": "[含生命安全类事件]", "en": "[life-safety included]"},
    "window.not_life_safety": {"zh": "(不屏蔽火警、燃气、求救、跌倒等生命安全类事件)",
                               "en": "(never mutes fire, gas, SOS, falls or other life-safety "
                                     "incidents)"},
    "window.everywhere": {"zh": "全社区", "en": "the whole community"},
    "window.life_safety_warning": {
        "zh": "注意: 此屏蔽包含生命安全类事件; 期间发生的报警仍会通知社区值班人员, "
              "并注明此维护窗口",
        "en": "note: this silence covers life-safety incidents; alarms during it still page "
              "the community duty officer, labelled with this maintenance window"},
    "ack.done": {"zh": "已确认事件 {id} {title} (确认人: {actor})",
                 "en": "acknowledged {id} {title} (as {actor})"},
    "ack.already": {"zh": "事件 {id} {title} 已由 {by} 于 {when} 确认",
                    "en": "{id} {title} was already acknowledged by {by} at {when}"},
    "resolve.done": {"zh": "已关闭事件 {id} {title}, 结果: {outcome} (处理人: {actor})",
                     "en": "resolved {id} {title}: {outcome} (by {actor})"},
    "outcome.handled": {"zh": "已处置", "en": "handled"},
    "outcome.false_alarm": {"zh": "误报", "en": "false alarm"},
    "outcome.referred": {"zh": "已转交", "en": "referred"},
    "control.not_running": {"zh": "守护进程未在 {url} 运行 (无法连接). 请检查 sentinel 服务是否"
                                  "已启动 (systemctl status sentinel), 以及本命令是否读取了守护进程"
                                  "的配置 (-c, state_dir, [control] socket/host/port)",
                            "en": "the sentinel daemon is not running at {url} (cannot "
                                  "connect); check that the service is up (systemctl status "
                                  "sentinel) and that this command reads the daemon's "
                                  "configuration (-c, state_dir, [control] socket/host/port)"},
    "control.unauthorized": {"zh": "守护进程 {url} 拒绝了控制令牌: 请检查 control.token / "
                                   "control.token_file 是否与守护进程一致",
                             "en": "the daemon at {url} refused the control token; check that "
                                   "control.token / control.token_file match the daemon's"},
    "control.not_found": {"zh": "没有未关闭的事件 {id}", "en": "no open incident {id}"},
    "control.bad_request": {"zh": "请求被拒绝: {detail}", "en": "request refused: {detail}"},
    "control.failed": {"zh": "控制接口出错 ({url}): {detail}",
                       "en": "control API error ({url}): {detail}"},
    "control.no_token": {"zh": "无法取得控制令牌:", "en": "cannot get the control token:"},
    "control.forbidden": {"zh": "没有权限: {detail}", "en": "not allowed: {detail}"},
    "control.unavailable": {"zh": "无法提供: {detail}", "en": "not available: {detail}"},
    "control.no_device": {"zh": "清单中没有设备 {id}", "en": "no device {id} in the inventory"},
    "control.window_not_found": {"zh": "没有生效中的 #{id}", "en": "no active window #{id}"},
    "event.notification_sent": {"zh": "已通知", "en": "notified"},
    "event.notification_failed": {"zh": "通知失败", "en": "notification failed"},
    "event.notification_unknown": {"zh": "通知结果未知 (重启前已发出)",
                                   "en": "notification outcome unknown (sent before a restart)"},
    "event.escalation_started": {"zh": "开始通知", "en": "escalation started"},
    "event.escalation_step": {"zh": "升级通知", "en": "escalated"},
    "event.escalation_reminder": {"zh": "再次提醒", "en": "reminder"},
    "event.escalation_paused": {"zh": "已确认, 暂停升级", "en": "escalation paused"},
    "event.escalation_stopped": {"zh": "停止升级", "en": "escalation stopped"},
    "event.escalation_digest": {"zh": "列入日报", "en": "in the daily digest"},
    "event.nobody_on_duty": {"zh": "无人值班", "en": "nobody on duty"},
    "event.tier_unreachable": {"zh": "该级无人可达", "en": "tier unreachable"},
    "event.no_escalation_policy": {"zh": "无升级策略", "en": "no escalation policy"},
    # Stored by versions before silences were asked at send time.
    "event.notification_suppressed": {"zh": "通知已屏蔽", "en": "notification suppressed"},
    "event.notification_muted": {"zh": "屏蔽中, 暂不通知", "en": "muted by a silence"},
    "event.mute_ended": {"zh": "屏蔽结束, 开始通知", "en": "silence ended, escalating"},
    "tail.open": {"zh": "当前未关闭事件 {count} 个:", "en": "{count} open incident(s):"},
    "tail.following": {"zh": "—— 实时事件 (Ctrl-C 退出) ——",
                       "en": "-- live events (Ctrl-C to stop) --"},
    "tail.lost": {"zh": "与守护进程的连接中断 ({detail}), 正在重连, 将从 #{seq} 之后补齐…",
                  "en": "lost the daemon ({detail}); reconnecting, will catch up after "
                        "#{seq}…"},
    "tail.back": {"zh": "已重新连接, 从 #{seq} 之后继续", "en": "reconnected, resuming after "
                                                           "#{seq}"},
    "tail.dropped": {"zh": "(读数过多, 已跳过 {count} 条)",
                     "en": "(too many readings: {count} skipped)"},
    "status.district_header": {
        "zh": "街道 {n} 个社区  {now}  离线 {offline} · 吹哨 {whistled}",
        "en": "district: {n} communities  {now}  offline {offline} · whistled {whistled}"},
    "status.district_row": {
        "zh": "  {name} ({id}): {reach}, 最后联系 {heard}; 未关闭 {open}, 未确认 {unack}  {marks}",
        "en": "  {name} ({id}): {reach}, last heard {heard}; {open} open, {unack} "
              "unacknowledged  {marks}"},
    "status.district_whistled": {"zh": "已吹哨", "en": "whistled"},
    "status.district_ls": {"zh": "生命安全未确认 {n}", "en": "{n} life-safety unacknowledged"},
    "status.district_missing": {"zh": "缺失事件 {n}", "en": "{n} events missing"},
    "status.district_phone": {"zh": "    值班电话 {phone}", "en": "    duty phone {phone}"},
    "status.district_own": {"zh": "街道自身未关闭事件: {counts}",
                            "en": "the street office's own open incidents: {counts}"},
    "status.reach.online": {"zh": "在线", "en": "online"},
    "status.reach.offline": {"zh": "离线", "en": "offline"},
    "status.reach.stopped": {"zh": "已停止", "en": "stopped"},
    "status.reach.unknown": {"zh": "未知", "en": "unknown"},
    "status.header": {"zh": "{community} 设备状态  {now}", "en": "{community} fleet  {now}"},
    "status.devices": {"zh": "设备: 共 {total} 台, 在线 {online}, 离线 {offline}, 未上报 {unseen}",
                       "en": "devices: {total}, online {online}, offline {offline}, "
                             "never reported {unseen}"},
    "status.row": {"zh": "  {name}: 共 {total}, 在线 {online}, 离线 {offline}, 未上报 {unseen}",
                   "en": "  {name}: {total}, online {online}, offline {offline}, "
                         "never reported {unseen}"},
    "status.by_kind": {"zh": "按类型:", "en": "by kind:"},
    "status.by_grid": {"zh": "按网格:", "en": "by grid:"},
    "status.incidents": {"zh": "未关闭事件: {counts}", "en": "open incidents: {counts}"},
    "status.low_battery": {"zh": "电量低 {count} 台: {devices}",
                           "en": "low battery ({count}): {devices}"},
    "status.offline": {"zh": "离线设备 {count} 台: {devices}",
                       "en": "offline devices ({count}): {devices}"},
    "status.last_reading": {"zh": "最近读数: {when}", "en": "last reading: {when}"},
    "status.broker_ok": {"zh": "MQTT 代理: 已连接 {host}:{port}",
                         "en": "MQTT broker: connected to {host}:{port}"},
    "status.broker_down": {"zh": "MQTT 代理: 无法连接 {host}:{port} ({error}). 请检查代理是否运行、"
                                 "[mqtt] host/port、防火墙与账号密码",
                           "en": "MQTT broker: cannot connect to {host}:{port} ({error}); check "
                                 "that the broker runs, [mqtt] host/port, the firewall and the "
                                 "credentials"},
    "status.store": {"zh": "存储: {backend}, 已写入 {stored} 条, 最近提交 {ms} ms",
                     "en": "store: {backend}, {stored} written, last commit {ms} ms"},
    "status.spool": {"zh": "暂存队列: {rows} 条 ({bytes} 字节){warn}",
                     "en": "spool: {rows} rows ({bytes} bytes){warn}"},
    "status.outbox": {"zh": "待发通知: {depth}", "en": "notifications waiting: {depth}"},
    "history.none": {"zh": "{device} 在该时段没有读数", "en": "no readings of {device} in that "
                                                         "period"},
    "history.progress": {"zh": "已导出 {count} 条…", "en": "exported {count}…"},
    "board.link": {"zh": "看板一次性登录链接 ({minutes} 分钟内有效): {url}",
                   "en": "board login link (one use, valid {minutes} min): {url}"},
    "no_state": {"zh": "尚无状态数据库 {path} (守护进程是否运行过?)",
                 "en": "no state database at {path} (has the daemon run yet?)"},
    # sentinel devices import (notes on stderr; the rows are CSV on stdout)
    "import.nothing": {"zh": "{timeout} 秒内未在 {broker} 收到 {topic} 上的保留消息。"
                             "请检查网关 (Zigbee2MQTT / Home Assistant 自动发现) 是否在运行, "
                             "基础主题是否正确 (--base), 本账号是否有权订阅该主题",
                       "en": "no retained message on {topic} at {broker} within {timeout} s: "
                             "is the bridge (Zigbee2MQTT / Home Assistant discovery) running, "
                             "is the base topic right (--base), and may this account "
                             "subscribe to it?"},
    "import.connect_failed": {"zh": "无法从 MQTT 代理 {broker} 读取: {reason}",
                              "en": "cannot read from the MQTT broker at {broker}: {reason}"},
    "import.bad_broker": {"zh": "无法识别的代理地址 {value} (例: mqtt://127.0.0.1:1883, "
                                "mqtts://用户名@主机:8883)",
                          "en": "cannot read the broker address {value!r} (e.g. "
                                "mqtt://127.0.0.1:1883, mqtts://user@host:8883)"},
    "import.bad_timeout": {"zh": "无法识别的超时 {value} (例: 5s, 1m)",
                           "en": "cannot read the timeout {value!r} (e.g. 5s, 1m)"},
    "import.bad_payload": {"zh": "{topic} 的内容不是 Zigbee2MQTT 设备列表: {reason}",
                           "en": "{topic} does not hold Zigbee2MQTT's device list: {reason}"},
    "import.no_password": {"zh": "无法读取密码文件 {path}: {reason}",
                           "en": "cannot read the password file {path}: {reason}"},
    "import.tls_failed": {"zh": "无法使用 [mqtt.tls] 的证书: {reason}",
                          "en": "cannot use the [mqtt.tls] certificates: {reason}"},
    "import.summary": {"zh": "{rows} 行待核对 (标准输出), {notes} 条提示 (见上)。请补全空着的"
                             "位置列 (社区、小区、楼栋、网格等), 核对类型, "
                             "再加入设备清单并运行 sentinel check",
                       "en": "{rows} row(s) to review (on stdout), {notes} note(s) (above). "
                             "Fill in the empty place columns (community, compound, building, "
                             "grid…), check each kind, then add the rows to the inventory "
                             "and run sentinel check"},
    "import.note.z2m_row": {"zh": "{id}: 猜测为{kind} (暴露 {property}); {model}, 网关名称 {name}",
                            "en": "{id}: guessed {kind} (exposes {property}); {model}, named "
                                  "{name} on the bridge"},
    "import.note.ha_row": {"zh": "{id}: 猜测为{kind} (device_class {device_class}); {model}, "
                                 "状态主题 {state_topic}",
                           "en": "{id}: guessed {kind} (device_class {device_class}); {model}, "
                                 "state topic {state_topic}"},
    "import.note.ha_row_no_profile": {
        "zh": "{id}: 猜测为{kind} (device_class {device_class}); {model}。状态主题 "
              "{state_topic} 不属于已知的设备协议: 请在 profile 列填写能解析它的设备协议 "
              "(没有则编写一个)",
        "en": "{id}: guessed {kind} (device_class {device_class}); {model}. No known profile "
              "for its state topic {state_topic}: put the profile that reads it in the "
              "profile column (write one if none does)"},
    "import.note.unsupported": {"zh": "未导入 {name}, {model}: 其能力 {exposes} 不对应 "
                                      "sentinel 的任何设备类型",
                                "en": "not imported: {name}, {model}, exposes {exposes}, "
                                      "which match no sentinel kind"},
    "import.note.no_definition": {"zh": "未导入 {name}: Zigbee2MQTT 不认识该型号 "
                                        "(supported: false), 无法判断类型",
                                  "en": "not imported: {name} is a model Zigbee2MQTT "
                                        "does not support (no definition): its kind cannot "
                                        "be guessed"},
    "import.note.interview": {"zh": "未导入 {name}: 入网问询 (interview) 尚未完成, "
                                    "请等待或重新配对",
                              "en": "not imported: {name} has not finished its "
                                    "interview; wait, or pair it again"},
    "import.note.disabled": {"zh": "未导入 {name}: 已在 Zigbee2MQTT 中停用",
                             "en": "not imported: {name} is disabled in Zigbee2MQTT"},
    "import.note.ha_unsupported": {"zh": "未导入 {name}, {model}: 其实体 {entities} "
                                         "不对应 sentinel 的任何设备类型",
                                   "en": "not imported: {name}, {model}, has entities "
                                         "{entities}, which match no sentinel kind"},
    "import.note.air_pressure": {"zh": "未导入 {name}, {model}: 压力单位 {unit} 多用于大气压, "
                                       "不按消火栓水压导入",
                                 "en": "not imported: {name}, {model}, reports pressure in "
                                       "{unit}, a unit of air pressure: not taken as hydrant "
                                       "pressure"},
    "import.note.bad_discovery": {"zh": "已跳过 {topic}: {reason}",
                                  "en": "skipped {topic}: {reason}"},
    # H5 (logins): sentinel board --person/--viewer/--send, and the personal link message
    "board.role.operator": {"zh": "可操作", "en": "operator"},
    "board.role.viewer": {"zh": "只读", "en": "view only"},
    "board.person_link": {"zh": "{name} 的个人看板登录链接 ({role}, 一次性, {minutes} 分钟内"
                                "有效, 操作记在本人名下): {url}",
                          "en": "personal board login link for {name} ({role}, one use, "
                                "valid {minutes} min, acts as that person): {url}"},
    "board.viewer_link": {"zh": "看板只读登录链接 (一次性, {minutes} 分钟内有效): {url}",
                          "en": "view-only board login link (one use, valid {minutes} min): "
                                "{url}"},
    "board.sent": {"zh": "已把 {name} 的个人看板登录链接 ({role}) 发送到 {channel}, "
                         "{minutes} 分钟内有效",
                   "en": "sent {name} their personal board login link ({role}) on {channel}, "
                         "valid {minutes} min"},
    "board.send_needs_person": {"zh": "--send 需要与 --person 一起使用 (发给谁)",
                                "en": "--send needs --person (whom to send it to)"},
    "board.no_person": {"zh": "值班表中没有联系人 {id} (见 sentinel oncall)",
                        "en": "no contact {id} in the on-call file (see sentinel oncall)"},
    "board.send_failed": {"zh": "登录链接未能发出: {detail}",
                          "en": "the login link could not be sent: {detail}"},
    "board.sent_title": {"zh": "一屏可视登录链接", "en": "Board login link"},
    "board.sent_body": {"zh": "{name}: 这是你的个人看板登录链接, 仅可使用一次, {minutes} 分钟内"
                              "有效, 在看板上的操作记在你名下。请勿转发。\n{url}",
                        "en": "{name}: your personal board login link. It works once, for "
                              "{minutes} minutes; what you do on the board is recorded under "
                              "your name. Do not forward it.\n{url}"},
    # -- H1 board (issue 16): the alarm sound, site plan, timeline and actions -----------
    "board.alarm.sounding": {"zh": "报警: {n} 起严重或紧急事件未确认",
                             "en": "ALARM: {n} critical or emergency incidents not "
                                   "acknowledged"},
    "board.alarm.mute": {"zh": "静音 {m} 分钟", "en": "Mute {m} min"},
    "board.alarm.muted": {"zh": "报警声已静音至 {time} ({n} 起未确认; 新的严重报警会立即响起)",
                          "en": "Alarm sound muted until {time} ({n} not acknowledged; a "
                                "new critical alarm sounds at once)"},
    "board.alarm.unmute": {"zh": "恢复声音", "en": "Sound on"},
    "board.alarm.blocked": {"zh": "浏览器阻止了报警声音: 点此启用",
                            "en": "The browser blocked the alarm sound: click to enable"},
    "board.section.plan": {"zh": "平面图", "en": "Site plan"},
    "board.plan.none": {"zh": "设备清单中没有楼栋坐标 (x、y 或 lat、lon 列), 无法绘制平面图",
                        "en": "The inventory gives no building positions (x, y or lat, lon "
                              "columns): no site plan"},
    "board.section.timeline": {"zh": "事件经过", "en": "Incident timeline"},
    "board.timeline.pick": {"zh": "点击一个事件, 查看经过并处理",
                            "en": "Click an incident to see its timeline and act on it"},
    "board.timeline.close": {"zh": "关闭", "en": "Close"},
    "board.timeline.empty": {"zh": "暂无记录", "en": "Nothing recorded yet"},
    "board.timeline.loading": {"zh": "加载中…", "en": "Loading…"},
    "board.timeline.latency": {"zh": "报警时限记录", "en": "Latency record"},
    "board.assigned": {"zh": "负责人: {who}", "en": "Assigned to {who}"},
    "board.unassigned": {"zh": "未指派", "en": "not assigned"},
    "board.btn.assign": {"zh": "指派", "en": "Assign"},
    "board.assign.pick": {"zh": "选择负责人", "en": "Choose a person"},
    "board.btn.note": {"zh": "添加记录", "en": "Add note"},
    "board.note.placeholder": {"zh": "现场情况、处理进展…", "en": "What is happening on site…"},
    "board.members": {"zh": "组内报警 {n} 起 (按钮作用于整组)",
                      "en": "{n} alarms in this group (the buttons act on all of them)"},
    "board.viewer": {"zh": "只读", "en": "view only"},
    "board.actor.board": {"zh": "{name} (值班屏)", "en": "{name} (board)"},
    "board.actor.board_shared": {"zh": "值班屏", "en": "the board"},
    "board.actor.cli": {"zh": "{name} (命令行)", "en": "{name} (command line)"},
    "board.actor.district": {"zh": "街道·{name}", "en": "street office: {name}"},
    "run.district_file": {
        "zh": "{config} 是街道(district)守护进程的配置: 请用 sentinel district -c {config} 启动。",
        "en": "{config} configures a district daemon: start it with "
              "sentinel district -c {config}."},
    "board.actor.system": {"zh": "系统", "en": "system"},
    "board.tl.opened": {"zh": "发生: {title}", "en": "opened: {title}"},
    "board.tl.acknowledged": {"zh": "{by} 确认", "en": "acknowledged by {by}"},
    "board.tl.assigned": {"zh": "{by} 指派给 {who}", "en": "{by} assigned it to {who}"},
    "board.tl.noted": {"zh": "{by} 记录: {text}", "en": "{by} noted: {text}"},
    "board.tl.resolved": {"zh": "{by} 关闭, 结果: {outcome}", "en": "resolved by {by}: {outcome}"},
    "board.tl.member_added": {"zh": "新增组内报警 {member}", "en": "alarm {member} joined"},
    "board.tl.attempt_ok": {"zh": "已送达 {who} ({channel})",
                            "en": "delivered to {who} ({channel})"},
    "board.tl.attempt_failed": {"zh": "发送给 {who} 失败 ({channel})",
                                "en": "sending to {who} failed ({channel})"},
    "board.tl.ack_expired": {"zh": "确认已超时, 重新升级", "en": "acknowledgement expired"},
    "board.tl.other": {"zh": "其他记录", "en": "other record"},
    "board.tl.photo": {"zh": "现场照片", "en": "photo from the site"},
    # -- H2 (closed loop): assignment, notes, link page actions, the response report --
    "event.assigned": {"zh": "已指派", "en": "assigned"},
    "event.noted": {"zh": "现场反馈", "en": "note"},
    "assign.done": {"zh": "已将事件 {id} {title} 指派给 {person} (操作人: {actor})",
                    "en": "assigned {id} {title} to {person} (by {actor})"},
    "assign.unknown_person": {"zh": "值班名单中没有联系人 {person}; 可用 sentinel oncall 查看",
                              "en": "no contact {person} in the on-call file; see "
                                    "sentinel oncall"},
    "note.done": {"zh": "已为事件 {id} {title} 添加反馈 (记录人: {actor}){photo}",
                  "en": "noted on {id} {title} (by {actor}){photo}"},
    "note.with_photo": {"zh": ", 附照片", "en": ", with a photo"},
    "note.bad_photo": {"zh": "无法使用照片 {path}: {reason}",
                       "en": "cannot use the photo {path}: {reason}"},
    "response.title": {"zh": "处置响应报告", "en": "Response report"},
    "response.header": {"zh": "{since} 至 {until}: 事件 {incidents} 起",
                        "en": "{since} to {until}: {incidents} incident(s)"},
    "response.empty": {"zh": "该时段没有事件", "en": "no incidents in that period"},
    "response.columns": {"zh": "{by} | 事件 | 已确认 | 有反馈 | 已解决 | 误报 | "
                               "确认用时 中位/90%/最长 | 到场(首次反馈)用时 中位/90%/最长 | "
                               "解决用时 中位/90%/最长",
                         "en": "{by} | incidents | acknowledged | noted | resolved | "
                               "false alarms | to acknowledge p50/p90/max | to arrive "
                               "(first note) p50/p90/max | to resolve p50/p90/max"},
    "response.by.worker": {"zh": "处理人", "en": "worker"},
    "response.by.grid": {"zh": "网格", "en": "grid"},
    "response.by.kind": {"zh": "设备类型", "en": "device kind"},
    "response.unassigned": {"zh": "未指派", "en": "unassigned"},
    "response.none": {"zh": "未注明", "en": "none"},
    "response.total": {"zh": "合计", "en": "total"},
    "response.devices": {"zh": "各设备误报率:", "en": "false alarms per device:"},
    "response.maintenance": {"zh": "建议检修 (本期误报 {n} 次及以上): {devices}",
                             "en": "maintenance candidates ({n} or more false alarms): "
                                   "{devices}"},
    "response.no_maintenance": {"zh": "没有误报 {n} 次及以上的设备",
                                "en": "no device with {n} or more false alarms"},
    "response.span.ack": {"zh": "确认用时", "en": "time to acknowledge"},
    "response.span.arrival": {"zh": "到场用时 (首次反馈)", "en": "time to arrive (first note)"},
    "response.span.resolve": {"zh": "解决用时", "en": "time to resolve"},
    "response.chart.false_alarms": {"zh": "各设备误报次数", "en": "false alarms per device"},
    "response.col.incidents": {"zh": "事件", "en": "incidents"},
    "response.col.acknowledged": {"zh": "已确认", "en": "acknowledged"},
    "response.col.noted": {"zh": "有反馈", "en": "noted"},
    "response.col.resolved": {"zh": "已解决", "en": "resolved"},
    "response.col.false_alarms": {"zh": "误报", "en": "false alarms"},
    "response.col.device": {"zh": "设备", "en": "device"},
    "response.col.kind": {"zh": "类型", "en": "kind"},
    "response.col.place": {"zh": "位置", "en": "place"},
    "response.col.rate": {"zh": "误报率", "en": "false-alarm rate"},
    "response.wrote": {"zh": "报告已写入 {path}", "en": "report written to {path}"},
    "link.greeting": {"zh": "{name}, 请确认接警", "en": "{name}, please acknowledge"},
    "link.severity": {"zh": "级别", "en": "Severity"},
    "link.place": {"zh": "地点", "en": "Place"},
    "link.opened": {"zh": "发生时间", "en": "Opened"},
    "link.device": {"zh": "设备", "en": "Device"},
    "link.incident": {"zh": "事件编号", "en": "Incident"},
    "link.drill": {"zh": "演练", "en": "Drill"},
    "link.button": {"zh": "确认接警", "en": "Acknowledge"},
    "link.hint": {"zh": "仅确认: 表示你已收到, 值班同事会看到, 但不由你去现场。",
                  "en": "Acknowledge only: the team sees you have it, without you going "
                        "on site."},
    "link.take_button": {"zh": "我去处理", "en": "I'll handle it"},
    "link.take_hint": {"zh": "我去处理: 确认接警并由你负责, 到场后可在此添加反馈和照片, "
                             "处理完毕后在此关闭事件。",
                       "en": "I'll handle it: acknowledge and take it on; on site, add notes "
                             "and photos here, and close it here when it is dealt with."},
    "link.done": {"zh": "已确认", "en": "Acknowledged"},
    "link.done_by": {"zh": "确认人: {name}", "en": "Acknowledged by {name}"},
    "link.acknowledged": {"zh": "已确认", "en": "Acknowledged"},
    "link.taken": {"zh": "已确认, 由你处理", "en": "Acknowledged; it is yours"},
    "link.noted": {"zh": "反馈已记录", "en": "Note recorded"},
    "link.already": {"zh": "此事件已被确认", "en": "Already acknowledged"},
    "link.already_by": {"zh": "确认人: {by}, 时间: {when}", "en": "by {by} at {when}"},
    "link.you_did": {"zh": "你已于 {when} 确认此事件。", "en": "You acknowledged it at {when}."},
    "link.yours": {"zh": "{name}, 此事件由你处理", "en": "{name}, this incident is yours"},
    "link.handled_by": {"zh": "{by} 正在处理 (自 {when})", "en": "{by} is handling it "
                                                             "(since {when})"},
    "link.note_title": {"zh": "现场反馈", "en": "Note from the site"},
    "link.note_hint": {"zh": "例如: 已到场, 厨房油烟触发, 无明火", "en": "e.g. on site; "
                                                               "kitchen smoke, no fire"},
    "link.photo": {"zh": "照片 (可选)", "en": "Photo (optional)"},
    "link.note_button": {"zh": "提交反馈", "en": "Add note"},
    "link.photo_attached": {"zh": "[附照片]", "en": "[photo]"},
    "link.notes": {"zh": "处置记录", "en": "Notes"},
    "link.resolve_title": {"zh": "处理结果", "en": "Outcome"},
    "link.resolve_hint": {"zh": "说明 (可选)", "en": "What was done (optional)"},
    "link.resolve_button": {"zh": "处理完毕, 关闭事件", "en": "Dealt with: close it"},
    "link.closed": {"zh": "事件已关闭", "en": "Incident closed"},
    "link.closed_by": {"zh": "关闭人: {by}, 时间: {when}", "en": "closed by {by} at {when}"},
    "link.via_board": {"zh": " (值班屏)", "en": " (board)"},
    "link.via_cli": {"zh": " (命令行)", "en": " (command line)"},
    "link.via_link": {"zh": " (通知链接)", "en": " (link)"},
    "link.via_sentinel": {"zh": "系统", "en": "sentinel"},
    # H4 demo (issue 16): a fresh story each run, the status line, the summary.
    "demo.fresh": {"zh": "已清除上次演示的数据库、收件箱和代理队列 ({state}), 本次从头演示",
                   "en": "cleared the previous demo's databases, inbox and broker queue "
                         "({state}): the story starts afresh"},
    "demo.broker_starting": {"zh": "正在启动本地 MQTT 代理 (mosquitto)…",
                             "en": "starting a local MQTT broker (mosquitto)…"},
    "demo.daemon_starting": {"zh": "正在启动守护进程 (内置存储, {devices} 台设备的清单)…",
                             "en": "starting the daemon (embedded store, an inventory of "
                                   "{devices} devices)…"},
    "demo.story": {"zh": "剧本 (开始后秒数): {offline} 一台燃气探测器离线 · "
                         "{smoke_alarm} 水贝花园1栋火情 (4 个烟感) · "
                         "{hydrant_drop} 旁边消火栓打开 · {fall} 老人跌倒 (不动则升为紧急) · "
                         "{gas_leak} 燃气泄漏 · {sos} SOS",
                   "en": "the story (seconds after the start): {offline} a gas detector "
                         "goes offline · {smoke_alarm} fire in 水贝花园 1栋 (4 detectors) · "
                         "{hydrant_drop} the hydrant beside it opened · {fall} a fall (raised "
                         "to emergency if the wearer lies still) · {gas_leak} gas leak · "
                         "{sos} SOS"},
    "demo.status": {"zh": "⏱ {elapsed}  读数 {stored} ({rate}/秒)  拒收 {rejected}  "
                          "事件 {incidents}  通知 {pages}  确认 {acks}",
                    "en": "⏱ {elapsed}  readings {stored} ({rate}/s)  rejected {rejected}  "
                          "incidents {incidents}  pages {pages}  acks {acks}"},
    "demo.summary": {"zh": "演示结束: 读数 {stored} 条 (拒收 {rejected}), 事件 {incidents} 起 "
                           "({severities}), 通知送达 {pages} 条, 确认 {acks} 次",
                     "en": "demo over: {stored} readings ({rejected} rejected), {incidents} "
                           "incidents ({severities}), {pages} pages delivered, {acks} "
                           "acknowledgements"},
    # Words people see for the model's internal values (status, outcomes, areas, reasons):
    # in Chinese mode no internal English word reaches a person.
    "status.firing": {"zh": "报警中", "en": "firing"},
    "status.acknowledged": {"zh": "已确认", "en": "acknowledged"},
    "status.resolved": {"zh": "已关闭", "en": "resolved"},
    "outcome.cleared": {"zh": "已恢复正常", "en": "cleared"},
    "outcome.cancelled": {"zh": "佩戴者已取消", "en": "cancelled by the wearer"},
    "outcome.expired": {"zh": "已过期", "en": "expired"},
    "outcome.with_group": {"zh": "随所属事件一并关闭", "en": "closed with its group"},
    "event.member_added": {"zh": "新增关联报警", "en": "member added"},
    "event.acknowledgement_expired": {"zh": "确认已超时", "en": "acknowledgement expired"},
    "event.attempt": {"zh": "投递", "en": "delivery"},
    "event.attempt_ok": {"zh": "投递成功", "en": "delivered"},
    "event.attempt_failed": {"zh": "投递失败", "en": "delivery failed"},
    "notice.alert": {"zh": "报警通知", "en": "alert"},
    "notice.escalated": {"zh": "升级通知", "en": "escalation"},
    "notice.repeat": {"zh": "再次提醒", "en": "reminder"},
    "notice.raised": {"zh": "级别升高", "en": "severity raised"},
    "notice.ack_expired": {"zh": "确认超时", "en": "acknowledgement expired"},
    "notice.resolved": {"zh": "已关闭通知", "en": "resolution"},
    "notice.unmuted": {"zh": "屏蔽结束", "en": "silence ended"},
    "scope.device": {"zh": "设备", "en": "device"},
    "scope.building": {"zh": "楼栋", "en": "building"},
    "scope.compound": {"zh": "小区", "en": "compound"},
    "scope.grid": {"zh": "网格", "en": "grid"},
    "scope.community": {"zh": "社区", "en": "community"},
    "weekday.mon": {"zh": "周一", "en": "mon"},
    "weekday.tue": {"zh": "周二", "en": "tue"},
    "weekday.wed": {"zh": "周三", "en": "wed"},
    "weekday.thu": {"zh": "周四", "en": "thu"},
    "weekday.fri": {"zh": "周五", "en": "fri"},
    "weekday.sat": {"zh": "周六", "en": "sat"},
    "weekday.sun": {"zh": "周日", "en": "sun"},
    "area.grid": {"zh": "网格", "en": "grid"},
    "area.compound": {"zh": "小区", "en": "compound"},
    "area.building": {"zh": "楼栋", "en": "building"},
    "area.community": {"zh": "全社区", "en": "community"},
    "area.device": {"zh": "设备", "en": "device"},
    "actor.sentinel": {"zh": "系统", "en": "sentinel"},
    "drill": {"zh": "演练", "en": "drill"},
    "silenced": {"zh": "已屏蔽", "en": "silenced"},
    "timeline.title": {"zh": "事件 {id}  【{severity}】{title}  {status}",
                       "en": "incident {id}  [{severity}] {title}  {status}"},
    "timeline.place": {"zh": "地点: {place}", "en": "place: {place}"},
    "timeline.device": {"zh": "设备: {device} ({kind})", "en": "device: {device} ({kind})"},
    "timeline.value": {"zh": "读数: {value}", "en": "reading: {value}"},
    "timeline.opened": {"zh": "发生: {at}", "en": "opened: {at}"},
    "timeline.acknowledged": {"zh": "确认: {at} {by}", "en": "acknowledged: {at} by {by}"},
    "timeline.assigned": {"zh": "处理人: {who} ({at})", "en": "assigned to: {who} ({at})"},
    "timeline.resolved": {"zh": "关闭: {at} {by}, 结果: {outcome}",
                          "en": "resolved: {at} by {by}: {outcome}"},
    "timeline.note": {"zh": "备注: {text}", "en": "note: {text}"},
    "timeline.members": {"zh": "关联报警 {count} 个: {ids}", "en": "{count} member(s): {ids}"},
    "timeline.groups": {"zh": "归入: {ids}", "en": "part of: {ids}"},
    "timeline.latency": {"zh": "时延记录:", "en": "latency record:"},
    "timeline.events": {"zh": "经过 ({count} 条):", "en": "timeline ({count}):"},
    "timeline.roles": {"zh": "通知 {roles}", "en": "paging {roles}"},
    "timeline.to": {"zh": "→ {who} ({channel})", "en": "→ {who} ({channel})"},
    "timeline.error": {"zh": "错误: {error}", "en": "error: {error}"},
    "timeline.window": {"zh": "屏蔽窗口 #{id}", "en": "silence #{id}"},
    "timeline.by": {"zh": "({actor})", "en": "({actor})"},
    "window.until_removed": {"zh": "直到移除", "en": "until removed"},
    "check.gap": {"zh": "值班缺口: {role} | {area}: {start} 至 {end} 无人值班",
                  "en": "{role} {area}: nobody on duty {start} – {end}"},
    # Display names of the built-in fields (a kind file's `label` is laid over them).
    "field.pressure": {"zh": "水压", "en": "pressure"},
    "field.level": {"zh": "液位", "en": "level"},
    "field.level_percent": {"zh": "液位百分比", "en": "level %"},
    "field.concentration_lel": {"zh": "燃气浓度", "en": "gas concentration"},
    "field.concentration_ppm": {"zh": "气体浓度", "en": "gas concentration"},
    "field.gas_type": {"zh": "气体种类", "en": "gas type"},
    "field.obscuration": {"zh": "烟雾浓度", "en": "smoke obscuration"},
    "field.temperature": {"zh": "温度", "en": "temperature"},
    "field.heart_rate": {"zh": "心率", "en": "heart rate"},
    "field.steps": {"zh": "步数", "en": "steps"},
    "field.battery": {"zh": "电量", "en": "battery"},
    "field.battery_low": {"zh": "低电量", "en": "low battery"},
    "field.battery_voltage": {"zh": "电池电压", "en": "battery voltage"},
    "field.signal": {"zh": "信号强度", "en": "signal"},
    "field.snr": {"zh": "信噪比", "en": "SNR"},
    "field.alarm": {"zh": "报警", "en": "alarm"},
    "field.tamper": {"zh": "防拆", "en": "tamper"},
    "field.fault": {"zh": "故障", "en": "fault"},
    "field.self_test": {"zh": "自检", "en": "self-test"},
    "field.sos": {"zh": "SOS", "en": "SOS"},
    "field.sos_cancel": {"zh": "取消 SOS", "en": "SOS cancel"},
    "field.fall": {"zh": "跌倒", "en": "fall"},
    "field.worn": {"zh": "佩戴", "en": "worn"},
    "field.valve_closed": {"zh": "阀门关闭", "en": "valve closed"},
    "field.latitude": {"zh": "纬度", "en": "latitude"},
    "field.longitude": {"zh": "经度", "en": "longitude"},
    "reason.payload_too_large": {"zh": "报文过大", "en": "payload too large"},
    "reason.empty_payload": {"zh": "空报文", "en": "empty payload"},
    "reason.invalid_encoding": {"zh": "编码无效 (非 UTF-8)", "en": "invalid encoding"},
    "reason.invalid_json": {"zh": "JSON 格式错误", "en": "invalid JSON"},
    "reason.no_profile": {"zh": "无匹配的设备协议", "en": "no matching profile"},
    "reason.missing_device_id": {"zh": "缺少设备编号", "en": "missing device id"},
    "reason.unknown_device": {"zh": "设备不在清单中", "en": "unknown device"},
    "reason.device_mismatch": {"zh": "主题与报文的设备编号不一致", "en": "device mismatch"},
    "reason.profile_mismatch": {"zh": "设备协议不符", "en": "profile mismatch"},
    "reason.missing_field": {"zh": "缺少字段", "en": "missing field"},
    "reason.wrong_type": {"zh": "字段类型错误", "en": "wrong type"},
    "reason.impossible_value": {"zh": "数值不可能", "en": "impossible value"},
    "reason.invalid_timestamp": {"zh": "时间无法识别", "en": "invalid timestamp"},
    "reason.timestamp_in_future": {"zh": "时间超前", "en": "timestamp in the future"},
    "reason.timestamp_too_old": {"zh": "时间过旧", "en": "timestamp too old"},
    "reason.duplicate_key": {"zh": "JSON 键重复", "en": "duplicate key"},
    "reason.store_rejected": {"zh": "存储拒收", "en": "store rejected"},
    "reason.decoder_error": {"zh": "解码程序错误", "en": "decoder error"},
    # -- H-BT: sentinel backtest (issue 17) ------------------------------------------------
    "backtest.header": {"zh": "规则回测 {start} — {end}，规则：{rules}，数据源：{source}",
                        "en": "Backtest {start} — {end}, rules: {rules}, source: {source}"},
    "backtest.read": {"zh": "回放读数 {readings} 条（{devices} 台设备），用时 {seconds} 秒，"
                            "每秒 {rate} 条",
                      "en": "{readings} readings replayed ({devices} devices) in {seconds} s, "
                            "{rate} readings/s"},
    "backtest.no_received_time": {
        "zh": "注意：时序数据库不保存接收时间，按设备时间回放；离线规则按设备时间判断。",
        "en": "Note: the time-series database keeps no receive time; readings are replayed "
              "by device time, and offline rules judge by it."},
    "backtest.nothing": {"zh": "这段时间内，这些规则不会产生任何事件。",
                         "en": "These rules would have raised nothing in this period."},
    "backtest.events": {"zh": "会产生 {count} 个事件：", "en": "{count} incidents would have "
                                                            "opened:"},
    "backtest.trigger": {"zh": "触发读数：{device} {time}  {values}",
                         "en": "reading: {device} {time}  {values}"},
    "backtest.trigger_timer": {"zh": "定时判定；该设备最后读数：{device} {time}  {values}",
                               "en": "decided by a timer; the device's last reading: "
                                     "{device} {time}  {values}"},
    "backtest.by_rule": {"zh": "按规则统计：", "en": "Per rule:"},
    "backtest.by_kind": {"zh": "按设备类型统计：", "en": "Per kind:"},
    "backtest.count_line": {"zh": "{name}：新发生 {opened}，升级 {raised}，恢复正常 {cleared}，"
                                  "已解决 {resolved}",
                            "en": "{name}: opened {opened}, raised {raised}, cleared "
                                  "{cleared}, resolved {resolved}"},
    "backtest.compare": {"zh": "与实际记录的事件对比：一致 {matched}，漏报 {missed}（记录有、"
                               "回测无），多报 {extra}（回测有、记录无）",
                         "en": "Against the recorded incidents: {matched} matched, {missed} "
                               "missed (recorded, not in the backtest), {extra} extra "
                               "(backtest only)"},
    "backtest.missed_line": {"zh": "漏报 {time}  {severity}  {title}  {target}（记录 {id}）",
                             "en": "missed {time}  {severity}  {title}  {target} "
                                   "(recorded {id})"},
    "backtest.extra_line": {"zh": "多报 {line}", "en": "extra {line}"},
    "backtest.diff": {"zh": "两套规则对比（A：{a}，B：{b}）：仅 A {only_a}，仅 B {only_b}，"
                            "两者都有 {both}",
                      "en": "Rule sets compared (A: {a}, B: {b}): only in A {only_a}, only "
                            "in B {only_b}, in both {both}"},
    "backtest.only_a_line": {"zh": "仅 A  {line}", "en": "only A  {line}"},
    "backtest.only_b_line": {"zh": "仅 B  {line}", "en": "only B  {line}"},
    "backtest.both_line": {"zh": "都有  {line}（B {shift}）", "en": "both  {line} (B {shift})"},
    "backtest.same_time": {"zh": "同时", "en": "at the same time"},
    "backtest.later": {"zh": "晚 {seconds} 秒", "en": "{seconds} s later"},
    "backtest.earlier": {"zh": "早 {seconds} 秒", "en": "{seconds} s earlier"},
    "backtest.progress": {"zh": "回测中：已回放 {readings} 条，每秒 {rate} 条，已用 {elapsed} 秒",
                          "en": "backtest: {readings} readings, {rate}/s, {elapsed} s"},
    "backtest.html_title": {"zh": "规则回测", "en": "Rule backtest"},
    "backtest.html_against": {"zh": "对比规则 {file}（虚线）", "en": "against {file} (dashed)"},
    "backtest.html_written": {"zh": "已写入 {path}（{incidents} 个事件）",
                              "en": "wrote {path} ({incidents} incidents)"},
    "backtest.config_failed": {"zh": "配置或规则文件有 {count} 处错误：",
                               "en": "{count} problem(s) in the configuration or rules:"},
    "backtest.unknown_device": {"zh": "设备清单中没有设备 {device}",
                                "en": "no device {device} in the inventory"},
    "backtest.unknown_kind": {"zh": "设备清单中没有类型为 {value} 的设备（已有：{known}）",
                              "en": "no device of kind {value} in the inventory (known: "
                                    "{known})"},
    "backtest.unknown_compound": {"zh": "设备清单中没有小区 {value}（已有：{known}）",
                                  "en": "no compound {value} in the inventory (known: "
                                        "{known})"},
    "backtest.unknown_grid": {"zh": "设备清单中没有网格 {value}（已有：{known}）",
                              "en": "no grid {value} in the inventory (known: {known})"},
    "backtest.bad_time": {"zh": "{what} 不是可识别的时间：{value}（例：2026-03-01T08:00）",
                          "en": "{what} is not a time: {value} (e.g. 2026-03-01T08:00)"},
    "backtest.bad_period": {"zh": "开始时间 {start} 不早于结束时间 {end}",
                            "en": "the start {start} is not before the end {end}"},
    "backtest.bad_jobs": {"zh": "--jobs 至少为 1，而不是 {value}",
                          "en": "--jobs must be 1 or more, not {value}"},
    "backtest.bad_source": {"zh": "未知的数据源 {value}（sqlite 或 victoria）",
                            "en": "unknown source {value} (sqlite or victoria)"},
    "backtest.no_readings": {"zh": "{start} — {end} 之间没有所选设备的读数",
                             "en": "no readings of the chosen devices between {start} and "
                                   "{end}"},
    "backtest.no_store": {"zh": "读数库不存在：{path}", "en": "no readings store at {path}"},
    "backtest.store_unreadable": {"zh": "无法读取读数库 {path}：{reason}",
                                  "en": "cannot read the readings store {path}: {reason}"},
    "backtest.unreachable": {"zh": "无法连接数据源 {url}：{reason}",
                             "en": "cannot reach the source {url}: {reason}"},
    "backtest.source_failed": {"zh": "数据源 {url} 出错：{reason}",
                               "en": "the source {url} failed: {reason}"},
    "backtest.no_export_api": {"zh": "{url} 没有 VictoriaMetrics 导出接口",
                               "en": "{url} has no VictoriaMetrics export API"},
    "backtest.influx_not_supported": {
        "zh": "{url} 不是 VictoriaMetrics：暂不支持从 InfluxDB 读取回测数据（这里没有可供测试的 "
              "InfluxDB 服务器）。请用 --source sqlite 或 VictoriaMetrics 的 --url。",
        "en": "{url} is not VictoriaMetrics: reading back from InfluxDB is not supported (no "
              "InfluxDB server to test against). Use --source sqlite, or --url of a "
              "VictoriaMetrics."},
    "backtest.html_failed": {"zh": "无法写入 {path}：{reason}", "en": "cannot write {path}: "
                                                                     "{reason}"},
    # -- H-EX (issue 17): rule examples run by `sentinel check` (rules/examples.py) --------
    "examples.ok": {"zh": "规则示例: {total} 个全部通过",
                    "en": "rule examples: all {total} passed"},
    "examples.failed": {"zh": "规则示例: {failed} 个未通过 (共 {total} 个)",
                        "en": "rule examples: {failed} of {total} failed"},
    "examples.skipped": {"zh": " (另有 {count} 个属于已停用的规则, 未运行)",
                         "en": " ({count} more belong to disabled rules, not run)"},
    "examples.which": {"zh": "✗ 规则 {rule}, 示例「{example}」:",
                       "en": "✗ rule {rule}, example \"{example}\":"},
    "examples.expected": {"zh": "预期: {events}", "en": "expected: {events}"},
    "examples.got": {"zh": "实际: {events}", "en": "got:      {events}"},
    "examples.first_difference": {"zh": "第 {number} 个事件不同: 预期 {expected}, 实际 {got}",
                                  "en": "first difference, event {number}: expected "
                                        "{expected}, got {got}"},
    "examples.later": {"zh": "在示例的最后时间之后: {events}",
                       "en": "after the example's last time: {events}"},
    "examples.nothing": {"zh": "(无)", "en": "(nothing)"},
    "examples.by_rule": {"zh": "[规则 {rule}]", "en": "[rule {rule}]"},
    "examples.unknown_device": {"zh": "设备 {device} 不在设备清单中",
                                "en": "device {device} is not in the inventory"},
    "examples.wrong_kind": {"zh": "设备 {device} 的类型 {kind} 不受此规则监测",
                            "en": "device {device} is of kind {kind}, which this rule does "
                                  "not watch"},
    "examples.bad_settings": {"zh": "示例设备的设置无效: {errors}",
                              "en": "the example device's settings are invalid: {errors}"},
    "examples.unknown_field": {"zh": "读数中的 {field} 不是 {kind} 类型设备的字段",
                               "en": "{field} is not a field of kind {kind}"},
    # R1 (i16b-board): closing from the board, a group's members by floor, the counts.
    "board.outcome.pick": {"zh": "选择处理结果…", "en": "Choose an outcome…"},
    "board.resolve.pick_first": {"zh": "请先选择处理结果, 再点处理完毕",
                                 "en": "Choose an outcome first, then Resolve"},
    "board.resolve.what": {"zh": "将关闭: {title} · {place}", "en": "Closing: {title} · {place}"},
    "board.resolve.with_members": {"zh": " (连同组内报警 {n} 起)",
                                   "en": " (with its {n} grouped alarms)"},
    "board.resolve.outcome": {"zh": "处理结果: {outcome}", "en": "Outcome: {outcome}"},
    "board.resolve.told": {"zh": "将发送关闭通知给: {list}",
                           "en": "A closing notice goes to: {list}"},
    "board.resolve.told_none": {"zh": "尚未通知过任何人, 不会发送关闭通知",
                                "en": "Nobody was notified, so no closing notice is sent"},
    "board.resolve.told_loading": {"zh": "正在查询将通知谁…",
                                   "en": "Looking up who will be told…"},
    "board.resolve.unacked": {"zh": "此事件尚无人确认 (没有人接手)。",
                              "en": "Nobody has acknowledged this incident yet."},
    "board.resolve.override": {"zh": "我已核实现场, 不经确认直接关闭",
                               "en": "I have checked on site: close it without an "
                                     "acknowledgement"},
    "board.resolve.note": {"zh": "处理说明 (可选, 记入事件经过)",
                           "en": "What was found (optional, kept in the timeline)"},
    "board.resolve.confirm": {"zh": "确认关闭", "en": "Close it"},
    "board.resolve.cancel": {"zh": "取消", "en": "Cancel"},
    "board.floor": {"zh": "{n}楼", "en": "{n}F"},
    "board.members.where": {"zh": "组内报警位置:", "en": "Grouped alarms at:"},
    "board.tl.member_joined": {"zh": "新增组内报警: {title} · {where}",
                               "en": "alarm joined: {title} · {where}"},
    "board.count.unacked": {"zh": "{n} 未确认", "en": "{n} not acknowledged"},
    "board.count.folded": {"zh": "另有组内报警 {n} 起, 折叠在所属事件下",
                           "en": "plus {n} grouped alarms, folded under their incident"},
    "board.latency.first_plain": {"zh": "首条通知 {s} s", "en": "first notification {s} s"},
    "board.latency.digest": {"zh": "维护事项: 列入每日维护日报, 不即时通知",
                             "en": "maintenance: in the daily digest, not paged"},
    # -- R2 (issue 16 round 2): the loop, notifications, channels, API errors, reports ----
    "channel.wecom": {"zh": "企业微信", "en": "WeCom"},
    "channel.dingtalk": {"zh": "钉钉", "en": "DingTalk"},
    "channel.feishu": {"zh": "飞书", "en": "Feishu"},
    "channel.email": {"zh": "邮件", "en": "e-mail"},
    "channel.ntfy": {"zh": "ntfy 推送", "en": "ntfy"},
    "channel.bark": {"zh": "Bark 推送", "en": "Bark"},
    "channel.sms": {"zh": "短信", "en": "SMS"},
    "channel.webhook": {"zh": "网络回调", "en": "webhook"},
    "channel.telegram": {"zh": "Telegram", "en": "Telegram"},
    "channel.pushplus": {"zh": "PushPlus 推送", "en": "PushPlus"},
    "channel.serverchan": {"zh": "Server酱", "en": "ServerChan"},
    "channel.wxpusher": {"zh": "WxPusher 推送", "en": "WxPusher"},
    "channel.pushdeer": {"zh": "PushDeer 推送", "en": "PushDeer"},
    "channel.gotify": {"zh": "Gotify 推送", "en": "Gotify"},
    "channel.matrix": {"zh": "Matrix 消息", "en": "Matrix"},
    "channel.mqtt": {"zh": "MQTT 消息", "en": "MQTT"},
    "channel.other": {"zh": "其他渠道", "en": "other channel"},
    "channel.unknown": {"zh": "未知渠道", "en": "unknown channel"},
    "actor.unknown": {"zh": "未知", "en": "unknown"},
    "actor.device": {"zh": "设备", "en": "the device"},
    "actor.board": {"zh": "{name} (值班屏)", "en": "{name} (board)"},
    "actor.board_shared": {"zh": "值班屏", "en": "the board"},
    "actor.cli": {"zh": "{name} (命令行)", "en": "{name} (command line)"},
    "link.in_group": {"zh": "此报警已并入「{title}」#{id} ({place}), 按整起事件处理: 在这里"
                            "确认、接手或反馈, 即同时作用于整起事件及其全部报警。",
                      "en": "This alarm is part of “{title}” #{id} ({place}) and is "
                            "handled as one: acknowledging, taking or noting it here acts on "
                            "the whole incident and all its alarms."},
    "link.group_firing": {"zh": "整起事件: 报警中, 尚无人确认",
                          "en": "The whole incident: firing, nobody has acknowledged it"},
    "link.group_acknowledged": {"zh": "整起事件: 已由 {by} 于 {when} 确认",
                                "en": "The whole incident: acknowledged by {by} at {when}"},
    "link.group_assigned": {"zh": "整起事件: 由 {by} 处理 (自 {when})",
                            "en": "The whole incident: {by} is handling it (since {when})"},
    "response.device_columns": {"zh": "设备 | 类型 | 位置 | 事件 | 误报 | 误报率",
                                "en": "device | kind | place | incidents | false alarms | "
                                      "false-alarm rate"},
    "response.spans": {"zh": "中位/90%/最长", "en": "p50/p90/max"},
    "response.p50": {"zh": "中位", "en": "p50"},
    "response.p90": {"zh": "90%", "en": "p90"},
    "api.no_open_incident": {"zh": "没有未关闭的事件 {id}", "en": "no open incident {id}"},
    "api.no_incident": {"zh": "没有事件 {id}", "en": "no incident {id}"},
    "api.no_contact": {"zh": "值班名单中没有联系人「{person}」(用 sentinel oncall 查看编号)",
                       "en": "no contact '{person}' in the on-call file"},
    "api.no_device": {"zh": "设备清单中没有设备 {device}", "en": "no device {device} in the "
                                                             "inventory"},
    "api.no_window": {"zh": "没有生效中的屏蔽/演练窗口 #{id}", "en": "no active {type} #{id}"},
    "api.no_photo": {"zh": "事件 {id} 没有照片 {photo}", "en": "no photo {photo} of "
                                                          "incident {id}"},
    "api.unknown_name": {"zh": "没有这个{what}: 「{name}」", "en": "unknown {what} '{name}'"},
    "api.unknown_name_in": {"zh": "小区「{where}」中没有这个{what}: 「{name}」",
                            "en": "unknown {what} '{name}' in compound '{where}'"},
    "api.what.compound": {"zh": "小区", "en": "compound"},
    "api.what.building": {"zh": "楼栋", "en": "building"},
    "api.what.grid": {"zh": "网格", "en": "grid"},
    "api.what.device": {"zh": "设备", "en": "device"},
    "api.what.community": {"zh": "社区", "en": "community"},
    "api.what.kind": {"zh": "设备类型", "en": "kind"},
    "api.what.rule": {"zh": "规则", "en": "rule"},
    "api.outcome_required": {"zh": "关闭事件需选择处理结果: 已处置、误报或已转交",
                             "en": "an outcome is required: handled, false_alarm or referred"},
    "api.note_empty": {"zh": "反馈需要文字、照片或两者", "en": "a note needs text, a photo, "
                                                           "or both"},
    "api.reason_required": {"zh": "需要填写原因 (为什么设置此窗口)",
                            "en": "reason is required (why this window)"},
    "api.window_scope": {"zh": "请说明窗口覆盖的范围: 地点、设备类型或规则",
                         "en": "say what the window covers: a place, kinds or rules"},
    "api.window_times": {"zh": "开始和结束时间无效 (结束须晚于开始)",
                         "en": "start and end are epoch seconds, end after start"},
    "api.actor_required": {"zh": "需要说明操作人", "en": "actor is required"},
    "api.viewer": {"zh": "只读看板登录不能操作", "en": "a view-only board login cannot act"},
    "api.csrf": {"zh": "页面已过期, 请刷新后重试", "en": "missing or wrong X-CSRF-Token; "
                                                      "reload the page"},
    "api.token": {"zh": "需要有效的访问令牌", "en": "a valid bearer token is required"},
    "api.photos_full": {"zh": "此事件已有 {count} 张照片, 不能再添加",
                        "en": "this incident has {count} photos already"},
    "api.photo_bad": {"zh": "照片无效 (仅接受不超过限制大小的图片)",
                      "en": "the photo cannot be used"},
    "api.text_bad": {"zh": "文字过长或含有控制字符", "en": "the text is too long or has "
                                                        "control characters"},
    "api.body_bad": {"zh": "请求内容无效", "en": "the request body is not valid"},
    "api.too_large": {"zh": "请求内容超过 {bytes} 字节", "en": "the request body is over "
                                                          "{bytes} bytes"},
    "api.internal": {"zh": "内部错误, 详见守护进程日志", "en": "internal error; see the log"},
    "api.no_board": {"zh": "看板需要在配置中开启 [control] http = true",
                     "en": "the board needs [control] http = true"},
    "api.no_sender": {"zh": "此守护进程没有通知发送能力", "en": "this daemon has no "
                                                           "notification sender"},
    "api.life_safety_scope": {"zh": "屏蔽生命安全类事件时须指明设备类型或规则",
                              "en": "muting life-safety incidents needs the kinds or rules "
                                    "it mutes"},
    "api.life_safety_drill": {"zh": "「生命安全」选项仅适用于屏蔽窗口", "en": "life_safety "
                                                                      "applies to silences "
                                                                      "only"},
    # -- issue 16 round 2, helper R3 (command line): ids, actors, stored state, units ----
    "actor.refused": {"zh": "{option} {value} 不是值班名单中的联系人编号, 不能记为操作人. "
                            "可用的编号: {ids} (查看: sentinel oncall --all); 不写 {option} "
                            "则记为命令行用户 {user}",
                      "en": "{option} {value} is not a contact id of the on-call file and "
                            "cannot be recorded as who acted. Contact ids: {ids} (see "
                            "sentinel oncall --all); without {option} it is recorded as the "
                            "command-line user {user}"},
    "person.ambiguous": {"zh": "有多个联系人名为 {name}: {ids}; 请写联系人编号",
                         "en": "more than one contact is named {name}: {ids}; give the "
                               "contact id"},
    "person.see_oncall": {"zh": "联系人编号与姓名见 sentinel oncall --all",
                          "en": "contact ids and names: sentinel oncall --all"},
    "oncall.all_header": {"zh": "全部联系人 {count} 人 (值班情况: {at}) — 编号 | 姓名 | 角色 | "
                                "负责区域 | 电话 | 值班",
                          "en": "all {count} contacts (duty at {at}) — id | name | roles | "
                                "areas | phone | duty"},
    "oncall.on_duty": {"zh": "值班中", "en": "on duty"},
    "oncall.off_duty": {"zh": "不在班", "en": "off duty"},
    "incidents.members": {"zh": "组内报警 {n} 起", "en": "{n} alarms in the group"},
    "stored.reading": {"zh": "守护进程未运行 ({url}), 以下为数据目录 {state} 中保存的记录",
                       "en": "the daemon is not running ({url}); what follows is read from "
                             "the records in its state directory {state}"},
    "control.not_running_at": {"zh": "守护进程未在 {url} 运行 ({why})",
                               "en": "the sentinel daemon is not running at {url} ({why})"},
    "control.cannot_connect": {"zh": "无法连接", "en": "cannot connect"},
    "control.also_no_socket": {"zh": "无法连接; 控制套接字 {socket} 也不存在",
                               "en": "cannot connect, and there is no control socket "
                                     "{socket}"},
    "control.advice_service": {"zh": "请检查 sentinel 服务是否已启动 (systemctl status "
                                     "sentinel), 以及本命令是否读取了守护进程的配置 (-c, "
                                     "state_dir, [control] socket/host/port)",
                               "en": "check that the service is up (systemctl status "
                                     "sentinel) and that this command reads the daemon's "
                                     "configuration (-c, state_dir, [control] "
                                     "socket/host/port)"},
    "control.advice_demo": {"zh": "{state} 是演示的数据目录, 演示已结束: 查看记录的命令 "
                                  "(incidents list/show, report, deadletter, history) 直接读取"
                                  "该目录; 确认、指派、关闭等操作需要运行中的演示 "
                                  "(sentinel demo --state-dir {state})",
                            "en": "{state} is a demo's state directory and the demo has "
                                  "ended: the commands that read records (incidents "
                                  "list/show, report, deadletter, history) read it directly; "
                                  "acknowledging, assigning and resolving need a running demo "
                                  "(sentinel demo --state-dir {state})"},
    "control.advice_nearby_demo": {"zh": "若要查看演示的记录: SENTINEL_STATE_DIR={state} "
                                         "sentinel incidents list",
                                   "en": "to look at the demo's records: "
                                         "SENTINEL_STATE_DIR={state} sentinel incidents list"},
    "history.newest": {"zh": "共 {count} 条读数, 显示最新的 {shown} 条",
                       "en": "{count} readings, the newest {shown} shown"},
    "deadletter.detail_in_english": {"zh": "(说明为英文原文: 加 --lang en 查看)",
                                     "en": "-"},
    # -- H-BENCH (issue 17): the backtest progress line's ETA --------------------------
    "backtest.progress_eta": {"zh": "，约 {percent}%，预计还需 {eta} 秒",
                              "en": ", ~{percent}%, ETA {eta} s"},
    # -- issue 18 (A): the box's uplink to its district ---------------------------------
    "actor.district": {"zh": "街道·{name}", "en": "street office: {name}"},
    # -- issue 18 (H): the district's own incidents: whistle and box offline -----------
    "whistle.title": {"zh": "吹哨: {alarm}无人确认", "en": "whistle: {alarm} unacknowledged"},
    "whistle.note_photo": {"zh": "(附照片, 在街道平台查看)",
                           "en": "(with a photo, on the district's board)"},
    "whistle.note_unreached": {
        "zh": "备注未能送达{community}的社区主机 (告警 {incident}; 无法连接或未应答), "
              "请致电社区值班电话 {phone}",
        "en": "The note did not reach {community}'s box (alarm {incident}; unreachable or "
              "no answer): phone the community's duty number {phone}"},
    "whistle.box_unreached": {
        "zh": "未能在{community}的社区主机上确认告警 {incident} (无法连接或未应答): "
              "社区告警仍未确认, 请致电社区值班电话 {phone}",
        "en": "Could not acknowledge alarm {incident} on {community}'s box (unreachable or "
              "no answer): it is still unacknowledged there. Phone the community's duty "
              "line {phone}."},
    "whistle.status.box_acknowledged": {
        "zh": "状态: 社区告警已由 {by} 于 {at} 确认, 吹哨结束",
        "en": "Status: the community's alarm was acknowledged by {by} at {at}; whistle "
              "ended"},
    "whistle.status.box_resolved": {
        "zh": "状态: 社区告警已由 {by} 于 {at} 关闭, 吹哨结束",
        "en": "Status: the community's alarm was closed by {by} at {at}; whistle ended"},
    "actor.street_office": {"zh": "{name} (街道)", "en": "{name} (street office)"},
    "actor.community": {"zh": "{name} ({community})", "en": "{name} ({community})"},
    "outcome.box_acknowledged": {"zh": "社区告警已确认", "en": "acknowledged in the community"},
    "outcome.box_resolved": {"zh": "社区告警已关闭", "en": "closed in the community"},
    "box_stopped.title": {"zh": "社区主机计划停机", "en": "community box stopped (planned)"},
    "box_stopped.status": {
        "zh": "状态: 社区主机已正常停止 (计划重启或升级), 恢复运行后自动解决; 如非计划停机, "
              "请联系社区",
        "en": "Status: the community box stopped cleanly (a planned restart or upgrade); "
              "resolves when it runs again. If the stop was not planned, call the community"},
    "district.ack_or": {"zh": "或执行命令: sentinel ack {id} -c district.toml",
                        "en": "or run: sentinel ack {id} -c district.toml"},
    "district.ack_cmd": {"zh": "确认方法: 执行命令 sentinel ack {id} -c district.toml",
                         "en": "To acknowledge, run: sentinel ack {id} -c district.toml"},
}


# Display names from the loaded configuration, by catalogue key ("kind.fire_lane",
# "incident.fire_lane_blocked", "field.h2s_ppm"), and the canonical units of fields that
# the code's own tables do not know. Replaced as a whole at each load (see loading.py).
_CONFIGURED: dict[str, dict[Language, str]] = {}
_FIELD_UNITS: dict[str, str] = {}
# Decimals each field keeps (its kind's precision), from the loaded kinds; a value is shown
# at that precision wherever a person reads it.
_FIELD_PRECISION: dict[str, int] = {}


def configure_labels(labels: Mapping[str, Label],
                     field_units: Mapping[str, str] | None = None,
                     precisions: Mapping[str, int] | None = None) -> None:
    """Lay the configuration's display names over the catalogue (replacing earlier ones).

    `labels` is keyed like the catalogue: ``kind.<kind>``, ``incident.<incident>``,
    ``field.<field>``; `field_units` gives the canonical unit of fields by name.
    """
    _CONFIGURED.clear()
    _CONFIGURED.update({key: label.texts() for key, label in labels.items()})
    _FIELD_UNITS.clear()
    _FIELD_UNITS.update(field_units or {})
    if precisions is not None:
        _FIELD_PRECISION.clear()
        _FIELD_PRECISION.update(precisions)


def _entry(key: str) -> dict[Language, str] | None:
    return _CONFIGURED.get(key) or _MESSAGES.get(key)


def entry(key: str) -> dict[Language, str]:
    """The catalogue's texts of `key` (not the configured ones); KeyError if none."""
    return dict(_MESSAGES[key])


def t(key: str, lang: Language = "zh", **values: object) -> str:
    """The message `key` in `lang`, formatted with `values`."""
    entry = _MESSAGES[key]
    return entry.get(lang, entry["en"]).format(**values)


def kind_name(kind: str, lang: Language = "zh") -> str:
    entry = _entry(f"kind.{kind}")
    return entry[lang] if entry else kind


def role_name(role: str, lang: Language = "zh") -> str:
    entry = _MESSAGES.get(f"role.{role}")
    return entry[lang] if entry else role


def incident_title(name: str, lang: Language = "zh") -> str:
    entry = _entry(f"incident.{name}")
    return entry[lang] if entry else name.replace("_", " ")


def incident_label(name: str, lang: Language = "zh") -> str | None:
    """The display name configured or catalogued for `name`, if it has one."""
    entry = _entry(f"incident.{name}")
    return entry[lang] if entry else None


def field_label(name: str, lang: Language = "zh") -> str | None:
    """A field's display name (a kind file's `label`, else the catalogue's), if it has one."""
    entry = _entry(f"field.{name}")
    return entry[lang] if entry else None


def field_unit(name: str) -> str | None:
    """The canonical unit of a field from a kind file, if it has one."""
    return _FIELD_UNITS.get(name)


def value_text(field: str, value: object, lang: Language = "zh") -> str:
    """A value as a person reads it: a number at its field's precision (trailing zeros
    dropped: 0.3500 MPa reads 0.35), a flag as 是/否, anything else as it is."""
    if isinstance(value, bool):
        return ("是" if value else "否") if lang == "zh" else ("yes" if value else "no")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        decimals = _FIELD_PRECISION.get(field, 3)
        text = f"{value:.{decimals}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    return str(value)


def event_name(event_type: str, lang: Language = "zh") -> str:
    entry = _MESSAGES.get(f"event.{event_type}")
    return entry[lang] if entry else event_type.replace("_", " ")


def catalog(prefixes: tuple[str, ...], lang: Language = "zh") -> dict[str, str]:
    """Every message whose key starts with one of `prefixes`, in `lang` (for a page),
    configured display names included."""
    merged = {**_MESSAGES, **_CONFIGURED}
    found = {k: v.get(lang, v["en"]) for k, v in merged.items() if k.startswith(prefixes)}
    # A page formats times in the community's zone too (Intl.DateTimeFormat's timeZone).
    found["zone"] = zone.current().key
    return found

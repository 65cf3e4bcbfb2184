"""`sentinel ack` and `sentinel resolve` against a running control server, as an operator would."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.config.model import Settings
from sentinel.control.http import ControlServer
from sentinel.control.secrets import control_token, ensure_secret, link_key
from sentinel.errors import ConfigError
from sentinel.incidents.model import Status

from helpers import copy_deployment, sentinel
from test_control_http import SIGNER, FakeController, make_incident

TOKEN = "cli-token-0123456789"
ID = "20240501-0007"


class ServerThread:
    """A ControlServer with a fake controller, on its own event loop in a background thread."""

    def __init__(self, controller: FakeController, token: str) -> None:
        self.controller = controller
        self.token = token
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="control-server", daemon=True)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with ControlServer("127.0.0.1", 0, self.token, SIGNER, self.controller) as server:
            self.port = server.port
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"control server did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A copy of the shipped deployment."""
    return copy_deployment(tmp_path / "deploy")


@pytest.fixture
def daemon() -> Iterator[ServerThread]:
    """A control server holding open incidents 20240501-0007 (smoke) and -0008 (gas)."""
    # The people of the shipped on-call file the command line reads too.
    controller = FakeController([make_incident(ID), make_incident("20240501-0008", "gas_leak")],
                                contacts={"gw-02": ("李建国", "zh"),
                                          "pm-01": ("水贝花园物业消控室", "zh")})
    with ServerThread(controller, TOKEN) as server:
        yield server


def env_for(tmp_path: Path, port: int, token: str | None = TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    env.update(SENTINEL_STATE_DIR=str(tmp_path / "state"), SENTINEL_CONTROL__PORT=str(port),
               USER="tester")
    if token is not None:
        env["SENTINEL_CONTROL__TOKEN"] = token
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- ack and resolve --------------------------------------------------------------------

def test_ack_zh(daemon: ServerThread, config: Path, tmp_path: Path) -> None:
    """`ack` acknowledges through the daemon and says so in Chinese by default."""
    result = sentinel("ack", ID, "-c", str(config), "--actor", "pm-01", "--note", "已到场",
                      env=env_for(tmp_path, daemon.port))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"已确认事件 {ID} 烟感报警 (确认人: 水贝花园物业消控室)"
    assert daemon.controller.calls == [("acknowledge", ID, "pm-01", "已到场")]


def test_actor_must_be_a_contact_id(daemon: ServerThread, config: Path, tmp_path: Path
                                    ) -> None:
    """A self-declared name is refused (it would be recorded as that person), with the ids
    to choose from; nothing reaches the daemon. Windows' --author likewise."""
    env = env_for(tmp_path, daemon.port)
    for command in (("ack", ID), ("resolve", ID, "--outcome", "handled"), ("note", ID, "x"),
                    ("assign", ID, "gw-02")):
        result = sentinel(*command, "-c", str(config), "--actor", "张三", env=env)
        assert result.returncode == 1, (command, result.stdout)
        assert "--actor 张三 不是值班名单中的联系人编号" in result.stderr
        assert "gw-02, gw-03" in result.stderr and "命令行用户 tester" in result.stderr
    result = sentinel("silence", "add", "--grid", "SB-G01", "--for", "1h", "--reason", "r",
                      "--author", "张三", "--lang", "en", "-c", str(config), env=env)
    assert result.returncode == 1 and "--author 张三 is not a contact id" in result.stderr
    assert daemon.controller.calls == []


def test_ack_en_default_actor(daemon: ServerThread, config: Path, tmp_path: Path) -> None:
    """In English, and the actor defaults to the OS account, marked cli: (never "operator")."""
    result = sentinel("ack", ID, "-c", str(config), "--lang", "en",
                      env=env_for(tmp_path, daemon.port))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"acknowledged {ID} smoke alarm (as tester (command line))"
    assert daemon.controller.incidents[ID].acknowledged_by == "cli:tester"


def test_ack_already_acknowledged(daemon: ServerThread, config: Path, tmp_path: Path) -> None:
    """Acknowledging what someone else took on says who did, and succeeds."""
    daemon.controller.incidents[ID].status = Status.ACKNOWLEDGED
    daemon.controller.incidents[ID].acknowledged_by = "gw-02"
    daemon.controller.incidents[ID].acknowledged_at = 1_700_000_000.0
    result = sentinel("ack", ID, "-c", str(config), "--lang", "en",
                      env=env_for(tmp_path, daemon.port))
    assert result.returncode == 0, result.stderr
    assert "already acknowledged by 李建国 at 11-15 06:13:20" in result.stdout


def test_resolve_zh_and_en(daemon: ServerThread, config: Path, tmp_path: Path) -> None:
    """`resolve` closes with the outcome, reported in the chosen language."""
    env = env_for(tmp_path, daemon.port)
    result = sentinel("resolve", ID, "-c", str(config), "--outcome", "false_alarm",
                      "--actor", "pm-01", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"已关闭事件 {ID} 烟感报警, 结果: 误报 "
                                     "(处理人: 水贝花园物业消控室)")
    result = sentinel("resolve", "20240501-0008", "-c", str(config), "--outcome", "referred",
                      "--note", "燃气公司已到场", "--lang", "en", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("resolved 20240501-0008 gas leak: referred "
                                     "(by tester (command line))")
    assert [c[3] for c in daemon.controller.calls] == ["false_alarm", "referred"]


def test_resolve_requires_outcome(daemon: ServerThread, config: Path, tmp_path: Path) -> None:
    """Closing without an outcome is a usage error; nothing is sent."""
    result = sentinel("resolve", ID, "-c", str(config), env=env_for(tmp_path, daemon.port))
    assert result.returncode == 2 and "--outcome" in result.stderr
    assert daemon.controller.calls == []


def test_unknown_incident(daemon: ServerThread, config: Path, tmp_path: Path) -> None:
    """An id that is not open exits 1 naming it."""
    env = env_for(tmp_path, daemon.port)
    result = sentinel("ack", "nope", "-c", str(config), env=env)
    assert result.returncode == 1 and result.stderr.strip() == "没有未关闭的事件 nope"
    result = sentinel("resolve", "nope", "-c", str(config), "--outcome", "handled",
                      "--lang", "en", env=env)
    assert result.returncode == 1 and result.stderr.strip() == "no open incident nope"


def test_daemon_not_running(config: Path, tmp_path: Path) -> None:
    """Nothing listening: exit 1 with a message naming the address and what to check."""
    port = free_port()
    result = sentinel("ack", ID, "-c", str(config), env=env_for(tmp_path, port))
    assert result.returncode == 1
    assert f"守护进程未在 http://127.0.0.1:{port} 运行" in result.stderr
    assert "[control] socket/host/port" in result.stderr
    result = sentinel("resolve", ID, "-c", str(config), "--outcome", "handled", "--lang", "en",
                      env=env_for(tmp_path, port))
    assert result.returncode == 1
    assert f"not running at http://127.0.0.1:{port}" in result.stderr


def test_wrong_token(daemon: ServerThread, config: Path, tmp_path: Path) -> None:
    """A token the daemon refuses exits 1 with an unauthorized message, never the token."""
    env = env_for(tmp_path, daemon.port, token="not-the-token")
    result = sentinel("ack", ID, "-c", str(config), env=env)
    assert result.returncode == 1 and "拒绝了控制令牌" in result.stderr
    assert "not-the-token" not in result.stderr + result.stdout
    result = sentinel("ack", ID, "-c", str(config), "--lang", "en", env=env)
    assert result.returncode == 1 and "refused the control token" in result.stderr
    assert daemon.controller.calls == []


def test_token_from_state_dir(daemon: ServerThread, config: Path, tmp_path: Path) -> None:
    """With no token configured, the command reads the one the daemon keeps in state_dir."""
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "control.token").write_text(TOKEN + "\n")
    result = sentinel("ack", ID, "-c", str(config), env=env_for(tmp_path, daemon.port, None))
    assert result.returncode == 0, result.stderr


def test_no_token_anywhere(daemon: ServerThread, config: Path, tmp_path: Path) -> None:
    """No token and a daemon answering: say where the token was looked for; create nothing."""
    result = sentinel("ack", ID, "-c", str(config), env=env_for(tmp_path, daemon.port, None))
    assert result.returncode == 1 and "无法取得控制令牌" in result.stderr
    assert str(tmp_path / "state" / "control.token") in result.stderr
    assert not (tmp_path / "state" / "control.token").exists()
    nobody = sentinel("ack", ID, "-c", str(config), env=env_for(tmp_path, free_port(), None))
    assert nobody.returncode == 1 and "守护进程未在" in nobody.stderr


def test_assign_and_note(daemon: ServerThread, config: Path, tmp_path: Path) -> None:
    """`assign` names the person; `note` sends text and a photo; both as cli:<user>."""
    env = env_for(tmp_path, daemon.port)
    # By the contact's exact name too (unique in the on-call file): the id is sent.
    result = sentinel("assign", ID, "李建国", "-c", str(config), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"已将事件 {ID} 烟感报警 指派给 李建国 (gw-02) "
                                     "(操作人: tester (命令行))")
    photo = tmp_path / "site.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    result = sentinel("note", ID, "已到场, 无明火", "--photo", str(photo), "--lang", "en",
                      "-c", str(config), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"noted on {ID} smoke alarm (by tester (command line)), "
                                     "with a photo")
    [(_, _, actor, text, photo_id)] = [c for c in daemon.controller.calls if c[0] == "note"]
    assert (actor, text) == ("cli:tester", "已到场, 无明火") and photo_id.endswith(".png")
    assert ("assign", ID, "gw-02", "cli:tester", False) in daemon.controller.calls
    photo.write_text("not a picture")
    result = sentinel("note", ID, "x", "--photo", str(photo), "-c", str(config), env=env)
    assert result.returncode == 1 and "照片无效" in result.stderr
    result = sentinel("assign", ID, "nobody", "-c", str(config), env=env)
    assert result.returncode == 1 and "值班名单中没有联系人 nobody" in result.stderr
    assert "sentinel oncall --all" in result.stderr


def test_report_response_outputs(daemon: ServerThread, config: Path, tmp_path: Path) -> None:
    """`report response` prints a table, or JSON/CSV to stdout, or writes an HTML file."""
    env = env_for(tmp_path, daemon.port)
    result = sentinel("report", "response", "--since", "2023-01-01", "-c", str(config),
                      env=env)
    assert result.returncode == 0, result.stderr
    assert "事件 2 起" in result.stdout and "未指派 | 2 |" in result.stdout
    result = sentinel("report", "response", "--since", "2023-01-01", "--json", "--by", "grid",
                      "-c", str(config), env=env)
    assert result.returncode == 0 and json.loads(result.stdout)["by"] == "grid"
    page = tmp_path / "r.html"
    result = sentinel("report", "response", "--since", "2023-01-01", "--csv", "--html",
                      str(page), "--lang", "en", "-c", str(config), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("section,key,name,incidents")
    assert "report written to" in result.stderr and "<table>" in page.read_text()


# -- the secrets behind it ------------------------------------------------------------

def test_ensure_secret_creates_once_with_0600(tmp_path: Path) -> None:
    """A missing secret is created (with its folder) readable by the owner only, then reused."""
    path = tmp_path / "new" / "control.token"
    first = ensure_secret(path)
    assert len(first) >= 40 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_secret(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["control.token"], "no temp file left"


def test_ensure_secret_refuses_empty_file(tmp_path: Path) -> None:
    """An empty secret file is an error, not an empty secret."""
    path = tmp_path / "link.key"
    path.write_bytes(b"\n")
    with pytest.raises(ValueError, match="empty"):
        ensure_secret(path)


def test_control_token_and_link_key_sources(tmp_path: Path) -> None:
    """Configured secrets win; otherwise the daemon generates them under state_dir."""
    settings = Settings.model_validate({"state_dir": tmp_path / "state"})
    with pytest.raises(ConfigError, match="not found"):
        control_token(settings, create=False)
    generated = control_token(settings)
    assert (tmp_path / "state" / "control.token").read_text().strip() == generated
    assert control_token(settings, create=False) == generated
    key = link_key(settings)
    assert key != generated.encode() and (tmp_path / "state" / "link.key").exists()
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    configured = Settings.model_validate({"state_dir": tmp_path / "state",
                                          "control": {"token_file": token_file,
                                                      "link_key_file": tmp_path / "nokey"}})
    assert control_token(configured) == "from-file"
    with pytest.raises(ConfigError, match="nokey"):
        link_key(configured)

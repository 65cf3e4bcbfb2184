"""Shared helpers for tests: paths of the shipped files, a config copier, a message source."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from sentinel.types import RawMessage

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = ROOT / "config" / "sentinel.toml"


def copy_deployment(dest: Path) -> Path:
    """Copy config/ and devices/ into dest (same layout); return the copied config path."""
    shutil.copytree(ROOT / "config", dest / "config")
    shutil.copytree(ROOT / "devices", dest / "devices")
    return dest / "config" / "sentinel.toml"


def sentinel(*args: str, env: dict[str, str] | None = None, timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
    """Run the sentinel CLI in a subprocess, as an operator would."""
    return subprocess.run([sys.executable, "-m", "sentinel", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)


class CountingSource:
    """MessageSource for Ingestor.process(): nothing to wait for, acknowledgements counted."""

    acked = 0

    async def batch(self, max_items: int) -> list[RawMessage]:
        return []

    def ack(self, messages: Sequence[RawMessage]) -> int:
        self.acked += len(messages)
        return len(messages)

    def pending(self) -> int:
        return 0

    def wake(self) -> None:
        pass

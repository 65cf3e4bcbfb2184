#!/usr/bin/env bash
# The test command (README): lint, type-check and run the tests against real servers.
# Works on a fresh Debian machine as root: installs mosquitto, victoria-metrics and the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bootstrap.sh
bootstrap_system python3-venv mosquitto victoria-metrics chromium chromium-driver fonts-wqy-microhei systemd openssl
bootstrap_venv test
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"

# Sourced by scripts/demo.sh and scripts/test.sh: install what a fresh Debian machine lacks.
# Usage: bootstrap_system <debian packages...>; bootstrap_venv <pip extras or "">
set -euo pipefail

_apt_updated=0
_apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "sentinel: missing system packages ($*); run as root or install them first" >&2
        exit 1
    fi
    if [ "$_apt_updated" -eq 0 ]; then
        echo "sentinel: apt-get update (refreshing the package lists)..." >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        _apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Installs each package whose binary is not on this machine yet.
bootstrap_system() {
    local missing=()
    for pkg in "$@"; do
        case "$pkg" in
            mosquitto) [ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || missing+=(mosquitto) ;;
            victoria-metrics) command -v victoria-metrics >/dev/null || missing+=(victoria-metrics) ;;
            python3-venv) python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv) ;;
            *) dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg") ;;
        esac
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "sentinel: installing ${missing[*]} (apt-get install)..." >&2
        _apt_install "${missing[@]}"
    fi
}

# Creates .venv (once) and installs the project into it, with the given extras.
bootstrap_venv() {
    local extras="${1:-}"
    local python="${PYTHON:-python3}"
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "sentinel: needs Python >= 3.11 (found $("$python" --version 2>&1))" >&2
        exit 1
    fi
    if [ ! -x .venv/bin/python ]; then
        echo "sentinel: creating .venv ($python -m venv) and upgrading pip in it..." >&2
        "$python" -m venv .venv
        .venv/bin/python -m pip install -q --upgrade pip
    fi
    local spec="."
    [ -n "$extras" ] && spec=".[$extras]"
    # The install is editable: only a change of pyproject.toml (dependencies, entry
    # points) or of the extras needs pip again, which took ~20 s silently on every run.
    local stamp=".venv/.sentinel-installed" want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1) $spec"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "sentinel: .venv is up to date (pyproject.toml unchanged since the last install)" >&2
        return
    fi
    echo "sentinel: installing sentinel and its Python dependencies into .venv" \
         "(pip install -e '$spec'; about 20 s the first time)..." >&2
    .venv/bin/python -m pip install -q -e "$spec"
    echo "$want" > "$stamp"
}

# Shared by scripts/demo and scripts/test: a project virtualenv with the package installed.
# Installs from the lock files in requirements/ (scripts/lock writes them); re-installs only when the lock
# or pyproject.toml changed, so a second run is quick.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

_stamp() {
    echo "$VENV/.installed-$1-$(cat "$ROOT/requirements/$1.txt" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
}

ensure_venv() {
    # ensure_venv demo|test : .venv holds exactly requirements/<name>.txt (the pinned, hashed versions the
    # suite passed with) plus this project, editable and without resolving its ranges again.
    local lock="$ROOT/requirements/$1.txt"
    [ -f "$lock" ] || { echo "no lock file $lock" >&2; exit 1; }
    if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "panel needs Python 3.11 or newer; found: $("$PY" --version 2>&1)" >&2
        exit 1
    fi
    local stamp
    stamp="$(_stamp "$1")"
    # test.txt pins the demo's packages at the same versions (scripts/lock), so a test venv serves the demo too
    if [ -f "$stamp" ] || { [ "$1" = demo ] && [ -f "$(_stamp test)" ]; }; then
        return 0
    fi
    # A new lock starts from an empty venv: pip install -r only adds and changes, it would keep a package
    # the lock dropped (or the other lock's extras), and the tests would run against more than the pins.
    "$PY" -m venv --clear "$VENV" || { echo "python3 -m venv failed; on Debian: apt-get install python3-venv" >&2; exit 1; }
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --require-hashes --no-deps -r "$lock"
    "$VENV/bin/python" -m pip install --quiet --no-deps -e "$ROOT"
    # --no-deps above trusts the lock to be complete; check it (a stale lock fails here, not in a test)
    "$VENV/bin/python" -m pip check >/dev/null || { "$VENV/bin/python" -m pip check >&2;
        echo "$lock does not satisfy pyproject.toml: run scripts/lock" >&2; exit 1; }
    touch "$stamp"
}

apt_install() {
    # apt_install PKG... : install the Debian packages that are missing (as root, or through sudo).
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

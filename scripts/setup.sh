#!/usr/bin/env bash
# Everything the project needs, idempotent and fast when already done:
# Debian packages (when missing and running as root), .venv, torch (CPU build), the project.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS="libusb-1.0-0 libtcmalloc-minimal4 libgomp1 libgl1 libegl1 libegl-mesa0 libgl1-mesa-dri libglib2.0-0 libfontconfig1 libxkbcommon0 libdbus-1-3"
# Wanted, not required: the report's browser check (tests/test_report.py skips without it, saying why).
OPTIONAL_DEBS="chromium-headless-shell"
missing=""
for pkg in $DEBS; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        echo "setup: installing Debian packages:$missing"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
        echo "setup: warning: missing Debian packages:$missing (install them as root)" >&2
    fi
fi
for pkg in $OPTIONAL_DEBS; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" && continue
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        echo "setup: installing the optional Debian package $pkg"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg"; } \
            >/dev/null 2>&1 || echo "setup: warning: could not install $pkg (its tests skip)" >&2
    fi
done

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.t3dnet-setup
want=$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing Python packages into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
    echo "$want" > "$stamp"
fi

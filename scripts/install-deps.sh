#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks to build, test and
# benchmark fnhost. Idempotent: only missing packages are installed.
set -euo pipefail

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

if ! have cargo; then
  echo "install-deps: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi

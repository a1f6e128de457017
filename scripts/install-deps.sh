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
# Runtime of nodejs functions (Debian's node >= 20.19: synchronous require of
# ES modules), the example greet-node and the node tests.
[ -x /usr/bin/node ] || need+=(nodejs)
# Building: a C toolchain for -sys crates, pkg-config.
have cc || need+=(gcc libc6-dev)
have pkg-config || need+=(pkg-config)
# userfaultfd-sys (hibernation, crates/fnhost-snapshot) generates its bindings
# with bindgen at build time: it needs libclang and the kernel's uapi headers.
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need+=(libclang-dev)
[ -f /usr/include/linux/userfaultfd.h ] || need+=(linux-libc-dev)

# Baselines of the benchmark harness (fnhost-bench runs them side by side
# with fnhost, and its smoke test in CI includes them). runc lives in sbin.
have crun || need+=(crun)
have runc || [ -x /usr/sbin/runc ] || need+=(runc)
have bwrap || need+=(bubblewrap)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${need[*]}; run as root to install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# nodejs functions need node >= 20.19 (synchronous require() of ES modules,
# --disable-warning); Debian 12's own nodejs package is 18.
if [ -x /usr/bin/node ]; then
  node_version=$(/usr/bin/node -p 'process.versions.node' 2>/dev/null || echo 0.0.0)
  IFS=. read -r node_major node_minor _ <<<"$node_version"
  if [ "${node_major:-0}" -lt 20 ] || { [ "$node_major" -eq 20 ] && [ "${node_minor:-0}" -lt 19 ]; }; then
    echo "install-deps: /usr/bin/node is $node_version; nodejs functions (and their tests) need" \
         ">= 20.19: install node 20.19+ or 22 (e.g. from NodeSource) as /usr/bin/node" >&2
  fi
fi

# A Python environment with boto3 for the Lambda-compatibility tests (a real
# AWS client against the /2015-03-31 API). Kept in .venv/ (git-ignored).
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import boto3" 2>/dev/null; then
  if ! python3 -m venv .venv 2>/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
    fi
    rm -rf .venv
    /usr/bin/python3 -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check boto3
fi
# The aws CLI (PyPI `awscli`, v1: the same `aws lambda` commands) for the
# control-plane tests (issue 13, crates/fnhost/tests/control_plane.rs).
if [ ! -x .venv/bin/aws ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check awscli
fi

if ! have cargo; then
  echo "install-deps: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi

# --- deploy validators (issue 6: deploy/, crates/fnhost/tests/deploy.rs) ---
# systemd-analyze verifies deploy/systemd/fnhost.service (package systemd;
# works without systemd as PID 1); nginx tests deploy/routing/nginx.conf and
# runs it on loopback; kubernetes-validate (PyPI, Kubernetes schemas bundled,
# works offline) checks deploy/kubernetes/ and lives in .venv/.
deploy_need=()
command -v systemd-analyze >/dev/null 2>&1 || deploy_need+=(systemd)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || deploy_need+=(nginx)
if [ ${#deploy_need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${deploy_need[*]}; run as root to install them" >&2
    exit 1
  fi
  # Installing nginx must not start it (it would listen on port 80): a
  # policy-rc.d that denies service starts, only for this install.
  deploy_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    deploy_policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$deploy_policy"
    chmod 0755 "$deploy_policy"
  fi
  deploy_rc=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${deploy_need[@]}"; } || deploy_rc=$?
  [ -z "$deploy_policy" ] || rm -f "$deploy_policy"
  [ "$deploy_rc" -eq 0 ] || exit "$deploy_rc"
fi
if [ ! -x .venv/bin/kubernetes-validate ]; then
  [ -x .venv/bin/python ] || /usr/bin/python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check kubernetes-validate
fi
# --- end deploy validators ---

#!/usr/bin/env bash
# Installs fnhost on this host: the binary, its zygote shim library and reaper, a
# `fnhost` symlink on PATH, the systemd unit, an example config and function
# (never overwriting existing ones) and the state directory. Idempotent: run
# it again to upgrade the binaries in place (then `systemctl restart fnhost`).
#
#   cargo build --release --workspace
#   sudo deploy/install.sh                   # /usr/local + /etc/fnhost + systemd unit
#   sudo deploy/install.sh --dry-run         # print what it would do
#   deploy/install.sh --prefix /tmp/x --config-dir /tmp/x/etc --state-dir /tmp/x/state \
#       --functions-dir /tmp/x/functions --no-systemd --from target/debug
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=/usr/local
config_dir=/etc/fnhost
state_dir=/var/lib/fnhost
functions_dir=/srv/fnhost/functions
unit_dir=/etc/systemd/system
sysctl_dir=/etc/sysctl.d
from=${FNHOST_BIN_DIR:-}
systemd=1
enable=0
dry_run=0

usage() {
  cat <<USAGE
usage: deploy/install.sh [options]
  --prefix DIR         install root for programs (default /usr/local):
                       DIR/lib/fnhost/{fnhost,libfnhost_shim.so,fnhost-reaper}, DIR/bin/fnhost -> ../lib/fnhost/fnhost,
                       DIR/share/doc/fnhost/
  --from DIR           take fnhost, libfnhost_shim.so and fnhost-reaper from DIR (default: \$FNHOST_BIN_DIR,
                       else \$CARGO_TARGET_DIR/release, else <repo>/target/release)
  --config-dir DIR     config directory (default /etc/fnhost); fnhost.toml is installed
                       only if absent
  --state-dir DIR      server.state_dir (default /var/lib/fnhost), created mode 0711
  --functions-dir DIR  where the example function goes (default /srv/fnhost/functions),
                       installed only if absent
  --unit-dir DIR       systemd unit directory (default /etc/systemd/system)
  --no-systemd         do not install the unit or talk to systemd
  --sysctl-dir DIR     where kernel settings go if any must change (default /etc/sysctl.d)
  --enable             systemctl enable --now fnhost (after installing the unit)
  --dry-run            print what would be done, change nothing
  -h, --help           this text
USAGE
}

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --from) from=$2; shift 2 ;;
    --config-dir) config_dir=$2; shift 2 ;;
    --state-dir) state_dir=$2; shift 2 ;;
    --functions-dir) functions_dir=$2; shift 2 ;;
    --unit-dir) unit_dir=$2; shift 2 ;;
    --no-systemd) systemd=0; shift ;;
    --sysctl-dir) sysctl_dir=$2; shift 2 ;;
    --enable) enable=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

if [ -z "$from" ]; then
  from=${CARGO_TARGET_DIR:-$repo/target}/release
fi
abs() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s/%s\n' "$PWD" "$1" ;; esac; }
prefix=$(abs "$prefix"); config_dir=$(abs "$config_dir"); state_dir=$(abs "$state_dir")
functions_dir=$(abs "$functions_dir"); unit_dir=$(abs "$unit_dir"); from=$(abs "$from")

libdir=$prefix/lib/fnhost
bindir=$prefix/bin
docdir=$prefix/share/doc/fnhost

say() { printf 'install.sh: %s\n' "$*"; }
run() {
  if [ "$dry_run" = 1 ]; then
    printf '+ %s\n' "$*"
  else
    "$@"
  fi
}
# Copies $1 to $2 (mode $3) through a temporary file and a rename, so a
# running fnhost keeps its old binary and never sees a half-written one.
put() {
  local src=$1 dst=$2 mode=$3
  if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
    say "up to date: $dst"
    return
  fi
  run install -m "$mode" "$src" "$dst.new.$$"
  run mv -f "$dst.new.$$" "$dst"
  say "installed $dst"
}
# Like put, for a file whose text is $1 (already substituted).
put_text() {
  local text=$1 dst=$2 mode=$3
  if [ -f "$dst" ] && [ "$(cat "$dst")" = "$text" ]; then
    say "up to date: $dst"
    return
  fi
  if [ "$dry_run" = 1 ]; then
    printf '+ write %s (mode %s)\n' "$dst" "$mode"
  else
    printf '%s\n' "$text" > "$dst.new.$$"
    chmod "$mode" "$dst.new.$$"
    mv -f "$dst.new.$$" "$dst"
  fi
  say "installed $dst"
}

for f in fnhost libfnhost_shim.so fnhost-reaper; do
  if [ ! -f "$from/$f" ]; then
    echo "install.sh: $from/$f not found; build first (cargo build --release --workspace) or pass --from DIR" >&2
    exit 1
  fi
done
systemd_running=0
[ -d /run/systemd/system ] && systemd_running=1

# 1. Programs: the shim and the reaper must sit next to the binary (fnhost
#    looks for them beside /proc/self/exe, which resolves the symlink on PATH).
run install -d -m 0755 "$libdir" "$bindir" "$docdir"
put "$from/fnhost" "$libdir/fnhost" 0755
put "$from/libfnhost_shim.so" "$libdir/libfnhost_shim.so" 0644
put "$from/fnhost-reaper" "$libdir/fnhost-reaper" 0755
if [ "$(readlink "$bindir/fnhost" 2>/dev/null || true)" != "$libdir/fnhost" ]; then
  run ln -sfn "$libdir/fnhost" "$bindir/fnhost"
  say "linked $bindir/fnhost -> $libdir/fnhost"
fi
for doc in docs/operations.md deploy/README.md; do
  [ -f "$repo/$doc" ] && put "$repo/$doc" "$docdir/$(basename "$doc")" 0644
done

# 2. State directory (layer store): 0711, sandboxes run as unprivileged ids
#    in a user namespace and must traverse it (its contents stay root-only).
run install -d -m 0711 "$state_dir"

# 3. Example function and config, only where none exists yet.
if [ -e "$functions_dir/hello" ]; then
  say "kept existing $functions_dir/hello"
else
  run install -d -m 0755 "$functions_dir/hello"
  run install -m 0644 "$repo/examples/functions/hello/handler.py" "$functions_dir/hello/handler.py"
  say "installed example function $functions_dir/hello"
fi
run install -d -m 0755 "$config_dir"
config=$config_dir/fnhost.toml
if [ -e "$config" ]; then
  say "kept existing $config (compare with $repo/deploy/systemd/fnhost.toml after upgrades)"
else
  text=$(sed -e "s#/var/lib/fnhost#$state_dir#g" -e "s#/srv/fnhost/functions#$functions_dir#g" \
    "$repo/deploy/systemd/fnhost.toml")
  # 0600: it may hold admin_token.
  put_text "$text" "$config" 0600
fi

# 4. systemd unit, with this install's paths.
if [ "$systemd" = 1 ]; then
  text=$(sed -e "s#/usr/local/bin/fnhost#$bindir/fnhost#g" \
    -e "s#/etc/fnhost/fnhost.toml#$config#g" \
    -e "s#/usr/local/share/doc/fnhost#$docdir#g" \
    "$repo/deploy/systemd/fnhost.service")
  if [ "$state_dir" != /var/lib/fnhost ]; then
    # StateDirectory= only knows /var/lib; make the moved one writable.
    text=$(printf '%s\n' "$text" | sed -e "s#^ProtectSystem=strict#ProtectSystem=strict\nReadWritePaths=$state_dir#")
  fi
  run install -d -m 0755 "$unit_dir"
  put_text "$text" "$unit_dir/fnhost.service" 0644
  if [ "$systemd_running" = 1 ]; then
    run systemctl daemon-reload
    if [ "$enable" = 1 ]; then
      run systemctl enable --now fnhost.service
    fi
  else
    say "systemd is not running here: skipped daemon-reload"
  fi
fi

# 5. Kernel settings that forbid what every sandbox needs: an unprivileged
#    process (the zygote) creating a user namespace (each clone). Written
#    only where a forbidding value is found; fnhost refuses to start anyway
#    and names the setting.
sysctl_text=""
need() { # file under /proc/sys, forbidding value, sysctl name, value needed
  if [ -r "/proc/sys/$1" ] && [ "$(cat "/proc/sys/$1")" = "$2" ]; then
    sysctl_text="$sysctl_text$3 = $4
"
  fi
}
need user/max_user_namespaces 0 user.max_user_namespaces 65536
need kernel/unprivileged_userns_clone 0 kernel.unprivileged_userns_clone 1
need kernel/apparmor_restrict_unprivileged_userns 1 kernel.apparmor_restrict_unprivileged_userns 0
if [ -n "$sysctl_text" ]; then
  put_text "# fnhost: zygotes create each sandbox in a user namespace of its own.
$sysctl_text" "$sysctl_dir/60-fnhost.conf" 0644
  run sysctl -q -p "$sysctl_dir/60-fnhost.conf"
fi

# 6. Check the config the service will use.
if [ "$dry_run" = 1 ]; then
  printf '+ %s check-config --config %s\n' "$libdir/fnhost" "$config"
elif ! "$libdir/fnhost" check-config --config "$config" >/dev/null; then
  echo "install.sh: installed, but $config does not validate (see above)" >&2
  exit 1
fi

say "done"
if [ "$systemd" = 1 ] && [ "$enable" = 0 ]; then
  say "start it with: systemctl enable --now fnhost   (reload config: systemctl reload fnhost)"
fi

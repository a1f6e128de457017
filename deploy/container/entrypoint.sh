#!/bin/sh
# Container entrypoint of fnhost (run by tini as PID 1).
#
# On a cgroup v2 host the container sees its own cgroup as /sys/fs/cgroup
# (cgroup namespace), and this shell already sits in it. cgroup v2's
# no-internal-process rule forbids enabling controllers for child cgroups
# of a cgroup that holds processes, so, like docker:dind and kind do: move
# the container's processes into a child cgroup "daemon", then enable
# memory, cpu and pids for the children. fnhost's cgroup_root ("fnhost")
# then becomes a sibling of "daemon", inside the container's cgroup, under
# the pod's limits. On v1/hybrid hosts nothing needs doing.
set -eu

cg=/sys/fs/cgroup
if [ -f "$cg/cgroup.controllers" ] && [ -w "$cg/cgroup.subtree_control" ] \
  && [ "$(cat /proc/self/cgroup)" = "0::/" ] && grep -qx "$$" "$cg/cgroup.procs"; then
  # Only ever at the root of our own cgroup namespace with ourselves in it:
  # then cgroup.procs lists this container's processes and nothing else.
  mkdir -p "$cg/daemon"
  for _ in 1 2 3; do
    while read -r pid; do
      echo "$pid" > "$cg/daemon/cgroup.procs" 2>/dev/null || true
    done < "$cg/cgroup.procs"
    [ -s "$cg/cgroup.procs" ] || break
  done
  want=""
  for c in cpu memory pids; do
    grep -qw "$c" "$cg/cgroup.controllers" && want="$want +$c"
  done
  if [ -n "$want" ] && ! echo "$want" > "$cg/cgroup.subtree_control"; then
    echo "fnhost entrypoint: cannot enable$want in $cg/cgroup.subtree_control" >&2
  fi
fi

exec /usr/local/lib/fnhost/fnhost "$@"

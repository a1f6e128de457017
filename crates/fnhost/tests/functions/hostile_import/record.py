"""Test fixture: hostile import-time code (issue 16). Everything below runs
at module top level, in the zygote, before the handler is ever called: it
records what the zygote may do and tries to take over the host. The
handler returns the record (clones inherit it) so the test can assert that
every attempt was denied."""

import ctypes
import errno
import os
import socket
import stat

RECORD = {}
_libc = ctypes.CDLL(None, use_errno=True)


def _errno_name(e):
    return errno.errorcode.get(e, str(e))


def _attempt(name, action):
    """Runs `action`; records "ok" or the errno name it failed with."""
    try:
        action()
        RECORD[name] = "ok"
    except OSError as exc:
        RECORD[name] = _errno_name(exc.errno)


def _status():
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
                fields[key] = value.split()
    return fields


RECORD["status"] = _status()

# Every descriptor the import inherited, with what it points to.
FDS = {}
for name in os.listdir("/proc/self/fd"):
    fd = int(name)
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
        mode = os.fstat(fd).st_mode
    except OSError:
        continue  # the listing's own descriptor, closed by now
    FDS[fd] = {"target": target, "dir": stat.S_ISDIR(mode)}
RECORD["fds"] = {str(k): v for k, v in sorted(FDS.items())}

# fchdir into any directory descriptor and climb: the runc CVE-2024-21626
# pattern. None is expected; any that exists must not lead out.
ESCAPES = []
here = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
for fd, info in FDS.items():
    if info["dir"]:
        try:
            os.fchdir(fd)
            for _ in range(40):
                os.chdir("..")
            ESCAPES.append({"fd": fd, "root_listing": sorted(os.listdir("."))[:20]})
        except OSError as exc:
            ESCAPES.append({"fd": fd, "error": _errno_name(exc.errno)})
os.fchdir(here)
os.close(here)
RECORD["dir_fd_escapes"] = ESCAPES

# The control socket: nothing has been sent on it before import ends.
def _read_control():
    sock = socket.socket(fileno=os.dup(3))
    try:
        sock.recv(65536, socket.MSG_DONTWAIT)
    finally:
        sock.close()


_attempt("control_read", _read_control)

# Writes into every lower layer: by the host paths mountinfo names, and
# through the paths every zygote sees.
LOWER = []
with open("/proc/self/mountinfo") as f:
    for line in f:
        for option in line.split()[-1].split(","):
            if option.startswith("lowerdir="):
                LOWER.extend(p for p in option[len("lowerdir="):].split(":") if p)
RECORD["lower_layers"] = LOWER
WRITES = {}
targets = [os.path.join(layer, "etc/ld.so.preload") for layer in LOWER]
targets += [
    "/etc/ld.so.preload",
    "/var/task/fnhost-was-here",
    "/.fnhost/lower/etc/ld.so.preload",
    "/.fnhost/runtime/fnhost_shim.py",
    "/usr/fnhost-was-here",
]
for path in targets:
    def _write(path=path):
        with open(path, "a") as f:
            f.write("/tmp/evil.so\n")
    _attempt("write " + path, _write)
    WRITES[path] = RECORD.pop("write " + path)
RECORD["layer_writes"] = WRITES

# Making the root writable again, or mounting anything.
MS_REMOUNT, MS_BIND = 32, 4096
def _remount():
    if _libc.mount(b"none", b"/", None, MS_REMOUNT | MS_BIND, None) != 0:
        raise OSError(ctypes.get_errno(), "mount")


_attempt("remount_root_rw", _remount)

# userfaultfd: the device is not there, and the syscall may not make a
# kernel-fault-capable one (no UFFD_USER_MODE_ONLY).
_attempt("open_dev_userfaultfd", lambda: os.close(os.open("/dev/userfaultfd", os.O_RDWR)))
SYS_USERFAULTFD = {"x86_64": 323, "aarch64": 282}[os.uname().machine]
def _uffd():
    fd = _libc.syscall(SYS_USERFAULTFD, os.O_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "userfaultfd")
    os.close(fd)


_attempt("userfaultfd_kernel_faults", _uffd)

# Becoming root again, signalling init, leaving the namespaces.
_attempt("setuid_0", lambda: os.setuid(0))
_attempt("kill_init", lambda: os.kill(1, 9))
CLONE_NEWNS = 0x00020000
def _unshare():
    if _libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare")


_attempt("unshare_mount_ns", _unshare)
_attempt("open_cgroupfs", lambda: os.listdir("/sys/fs/cgroup"))


def handler(event, context):
    return RECORD

"""Landlock (Linux ≥ 5.13) for worker processes: read-only access to the Python installation and system
libraries, read-write only to the worker's own temporary directory, and (ABI ≥ 4) TCP connections only to
the allowed ports. Unprivileged and irreversible for the process and its children."""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Iterable

_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}  # create_ruleset, add_rule, restrict_self
_PR_SET_NO_NEW_PRIVS = 38
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2
_CREATE_RULESET_VERSION = 1

# Filesystem rights (include/uapi/linux/landlock.h)
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_REMOVE_DIR, _REMOVE_FILE, _MAKE_CHAR, _MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
_MAKE_REG, _MAKE_SOCK, _MAKE_FIFO, _MAKE_BLOCK, _MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1


_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


class SandboxUnavailable(OSError):
    """The kernel (or architecture) has no Landlock."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI version, or 0 when there is none."""
    nums = _SYSCALLS.get(platform.machine())
    if nums is None:
        return 0
    v = _libc().syscall(nums[0], None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(v, 0)


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


def restrict(
    read_paths: Iterable[str], write_paths: Iterable[str], connect_ports: Iterable[int], read_dirs: Iterable[int] = ()
) -> int:
    """Confine this process; returns the ABI version used. Paths that do not exist (or that this process cannot
    reach) are skipped; `read_dirs` are directories already open (reached before the process gave up its rights),
    readable too."""
    abi = abi_version()
    if abi <= 0:
        raise SandboxUnavailable("Landlock is not available on this kernel")
    create, add_rule, restrict_self = _SYSCALLS[platform.machine()]
    libc = _libc()
    handled = _fs_rights(abi)
    # ABI 4 confines TCP, ABI 6 also signals and abstract unix sockets to the sandbox (no killing the server).
    attr = _RulesetAttr(
        handled,
        (_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0,
        (_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0,
    )
    size = ctypes.sizeof(ctypes.c_uint64) * (3 if abi >= 6 else 2 if abi >= 4 else 1)
    fd = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        read = _EXECUTE | _READ_FILE | _READ_DIR
        for paths, rights in ((read_paths, read), (write_paths, handled)):
            for path in dict.fromkeys(paths):
                _add_path(libc, add_rule, fd, path, rights & handled)
        for dir_fd in read_dirs:
            _add_rule(libc, add_rule, fd, dir_fd, read & handled, f"directory descriptor {dir_fd}")
        if abi >= 4:
            for port in dict.fromkeys(connect_ports):
                rule = _NetPortAttr(_NET_CONNECT_TCP, port)
                if libc.syscall(add_rule, fd, _RULE_NET_PORT, ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule(port {port}) failed")
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(restrict_self, fd, ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(fd)
    return abi


def _add_path(libc: ctypes.CDLL, add_rule: int, ruleset: int, path: str, rights: int) -> None:
    try:
        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not os.path.isdir(path):  # files take only file rights
            rights &= _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
        _add_rule(libc, add_rule, ruleset, pfd, rights, path)
    finally:
        os.close(pfd)


def _add_rule(libc: ctypes.CDLL, add_rule: int, ruleset: int, pfd: int, rights: int, what: str) -> None:
    rule = _PathBeneathAttr(rights, pfd)
    if libc.syscall(add_rule, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
        raise OSError(ctypes.get_errno(), f"landlock_add_rule({what}) failed")


_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_PR_CAPBSET_DROP = 24
_LAST_CAP = 63


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """Give up every capability (for workers that must stay uid 0): root then has no more power than the
    file modes and Landlock allow, and cannot regain any (no_new_privs)."""
    libc = _libc()
    for cap in range(_LAST_CAP + 1):
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last capability: fine
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


# -- seccomp: no sockets ---------------------------------------------------------------------------------
# A classic-BPF filter (seccomp(2), SECCOMP_MODE_FILTER) that makes every call that could reach the network,
# another local service or the kernel's rarer attack surface fail with EPERM, for the worker and everything it
# starts (filters are inherited and cannot be removed). The worker keeps the one socket it was born with: its
# channel to the server. No new socket of any family (TCP, UDP, unix, netlink, raw) can be made.

_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000
_SECCOMP_RET_KILL_PROCESS = 0x80000000
_EPERM, _ENOSYS = 1, 38
# BPF opcodes
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
#: seccomp_data offsets: nr, arch, args[0] (low word on little-endian)
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16
#: clone() flags that make new namespaces (a way around the filter's view of the world)
_CLONE_NEW = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080

#: (audit arch, seccomp syscall number, clone, clone3, denied syscalls by name → number)
_ARCHES: dict[str, tuple[int, int, int, int, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,
        317,
        56,
        435,
        {
            "socket": 41,
            "socketpair": 53,
            "io_uring_setup": 425,
            "io_uring_enter": 426,
            "io_uring_register": 427,
            "ptrace": 101,
            "process_vm_readv": 310,
            "process_vm_writev": 311,
            "bpf": 321,
            "perf_event_open": 298,
            "userfaultfd": 323,
            "keyctl": 250,
            "add_key": 248,
            "request_key": 249,
            "unshare": 272,
            "setns": 308,
            "mount": 165,
            "umount2": 166,
            "pivot_root": 155,
            "chroot": 161,
            "kexec_load": 246,
            "init_module": 175,
            "finit_module": 313,
            "delete_module": 176,
            "open_by_handle_at": 304,
            "fsopen": 430,
            "fsmount": 432,
            "move_mount": 429,
            "open_tree": 428,
            "personality": 135,
            "pidfd_getfd": 438,
            "process_madvise": 440,
        },
    ),
    "aarch64": (
        0xC00000B7,
        277,
        220,
        435,
        {
            "socket": 198,
            "socketpair": 199,
            "io_uring_setup": 425,
            "io_uring_enter": 426,
            "io_uring_register": 427,
            "ptrace": 117,
            "process_vm_readv": 270,
            "process_vm_writev": 271,
            "bpf": 280,
            "perf_event_open": 241,
            "userfaultfd": 282,
            "keyctl": 219,
            "add_key": 217,
            "request_key": 218,
            "unshare": 97,
            "setns": 268,
            "mount": 40,
            "umount2": 39,
            "pivot_root": 41,
            "chroot": 51,
            "kexec_load": 104,
            "init_module": 105,
            "finit_module": 273,
            "delete_module": 106,
            "open_by_handle_at": 265,
            "fsopen": 430,
            "fsmount": 432,
            "move_mount": 429,
            "open_tree": 428,
            "personality": 92,
            "pidfd_getfd": 438,
            "process_madvise": 440,
        },
    ),
}


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def socket_filter(machine: str | None = None) -> list[tuple[int, int, int, int]]:
    """The filter program as (code, jt, jf, k) instructions, for this machine's architecture."""
    machine = machine or platform.machine()
    if machine not in _ARCHES:
        raise SandboxUnavailable(f"no seccomp filter for {machine}")
    arch, _, clone, clone3, denied = _ARCHES[machine]
    deny = _SECCOMP_RET_ERRNO | _EPERM
    prog: list[tuple[int, int, int, int]] = [
        (_LD_W_ABS, 0, 0, _OFF_ARCH),
        (_JEQ_K, 1, 0, arch),
        (_RET_K, 0, 0, _SECCOMP_RET_KILL_PROCESS),  # another ABI (e.g. 32-bit calls): refuse outright
        (_LD_W_ABS, 0, 0, _OFF_NR),
    ]
    if machine == "x86_64":
        prog += [(_JGE_K, 0, 1, 0x40000000), (_RET_K, 0, 0, _SECCOMP_RET_KILL_PROCESS)]  # the x32 ABI
    # clone3 passes its flags in memory, out of the filter's sight: ENOSYS makes libc fall back to clone.
    prog += [(_JEQ_K, 0, 1, clone3), (_RET_K, 0, 0, _SECCOMP_RET_ERRNO | _ENOSYS)]
    for nr in sorted(set(denied.values())):
        prog += [(_JEQ_K, 0, 1, nr), (_RET_K, 0, 0, deny)]
    prog += [
        (_JEQ_K, 0, 3, clone),
        (_LD_W_ABS, 0, 0, _OFF_ARG0),
        (_JSET_K, 0, 1, _CLONE_NEW),
        (_RET_K, 0, 0, deny),
        (_RET_K, 0, 0, _SECCOMP_RET_ALLOW),
    ]
    return prog


def deny_sockets() -> None:
    """Install the filter on this process (all its threads) and everything it will start. Irreversible."""
    machine = platform.machine()
    prog = socket_filter(machine)
    seccomp_nr = _ARCHES[machine][1]
    libc = _libc()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    filters = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
    fprog = _SockFprog(len(prog), filters)
    if libc.syscall(seccomp_nr, _SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC, ctypes.byref(fprog)) != 0:
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER) failed")

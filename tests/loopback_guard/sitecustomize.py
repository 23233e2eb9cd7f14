"""The loopback guard: this process may connect to, and look up, loopback addresses only.

Put this directory on `PYTHONPATH` and every Python process started with that environment
(test subprocesses, Dask workers and nannies, Ray workers and agents) imports it at start-up
(`sitecustomize`) and refuses, with `LoopbackGuardError`, any `connect`/`connect_ex`/`sendto`
to an address that is not loopback and any name lookup (`getaddrinfo`, `gethostbyname`,
`gethostbyaddr`...) of a name that is not a loopback one. Nothing is sent: the check runs
before the system call. Each refusal is also appended to the file named by
`LOOPBACK_GUARD_LOG` (when set), so a test fails even when the library that tried to phone
home swallowed the error.

Allowed: `127.0.0.0/8`, `::1` (and `::ffff:127.x`), `localhost`, Unix sockets, and lookups
of the unspecified address or of no host (binding). A test process loads it with `install()`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import time
from typing import Any

__all__ = ["LoopbackGuardError", "check_address", "check_host", "install", "uninstall"]

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_ORIGINAL: dict[str, Any] = {}


class LoopbackGuardError(ConnectionRefusedError):
    """A connect or name lookup that would leave loopback, refused by the test guard."""


def _refuse(what: str) -> LoopbackGuardError:
    message = f"loopback guard (pid {os.getpid()}): refused {what}"
    log = os.environ.get("LOOPBACK_GUARD_LOG")
    if log:
        try:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"{time.time():.3f} {os.getpid()} {sys.argv[:2]!r} {what}\n")
        except OSError:
            pass
    return LoopbackGuardError(message)


def _is_loopback_ip(host: str) -> bool | None:
    """True/False for an IP literal, `None` for a name."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def check_host(host: Any, *, lookup: bool) -> None:
    """Raise `LoopbackGuardError` unless `host` is loopback (for a lookup: or unspecified)."""
    if host is None or host == "" or host == b"":
        if lookup:
            return
        raise _refuse("a connect without a host")
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("ascii", "replace")
    if not isinstance(host, str):
        raise _refuse(f"a host of type {type(host).__name__}")
    name = host.strip().rstrip(".").lower()
    if name in _LOCAL_NAMES:
        return
    literal = _is_loopback_ip(name.strip("[]"))
    if literal:
        return
    if lookup and name in ("0.0.0.0", "::"):
        return
    kind = "name lookup" if lookup else "connect"
    raise _refuse(f"{kind} to {host!r} (not loopback)")


def check_address(family: int, address: Any) -> None:
    """Raise unless a socket address of `family` is loopback (Unix sockets always pass)."""
    if family in (socket.AF_INET, socket.AF_INET6):
        if not isinstance(address, tuple) or not address:
            raise _refuse(f"a connect to {address!r}")
        check_host(address[0], lookup=False)


def _guarded_socket_method(name: str) -> Any:
    original = getattr(socket.socket, name)

    def guarded(self: socket.socket, *args: Any) -> Any:
        if name in ("connect", "connect_ex"):
            check_address(self.family, args[0])
        elif name == "sendto" and args:
            check_address(self.family, args[-1])
        elif name == "sendmsg" and len(args) >= 4:
            check_address(self.family, args[3])
        return original(self, *args)

    guarded.__name__ = name
    guarded.__loopback_guard__ = True  # type: ignore[attr-defined]
    return original, guarded


def _guarded_lookup(name: str) -> Any:
    original = getattr(socket, name)

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        check_host(host, lookup=True)
        return original(host, *args, **kwargs)

    guarded.__name__ = name
    guarded.__loopback_guard__ = True  # type: ignore[attr-defined]
    return original, guarded


def _guarded_getnameinfo() -> Any:
    original = socket.getnameinfo

    def guarded(sockaddr: Any, flags: int) -> Any:
        check_host(sockaddr[0], lookup=True)
        return original(sockaddr, flags)

    guarded.__loopback_guard__ = True  # type: ignore[attr-defined]
    return original, guarded


def install() -> None:
    """Patch the socket module of this process (idempotent)."""
    if _ORIGINAL:
        return
    for name in ("connect", "connect_ex", "sendto", "sendmsg"):
        original, guarded = _guarded_socket_method(name)
        _ORIGINAL["socket." + name] = original
        setattr(socket.socket, name, guarded)
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        original, guarded = _guarded_lookup(name)
        _ORIGINAL[name] = original
        setattr(socket, name, guarded)
    original, guarded = _guarded_getnameinfo()
    _ORIGINAL["getnameinfo"] = original
    socket.getnameinfo = guarded


def uninstall() -> None:
    """Undo `install` (for a test process that installed it for a while)."""
    for key, original in _ORIGINAL.items():
        if key.startswith("socket."):
            setattr(socket.socket, key.removeprefix("socket."), original)
        else:
            setattr(socket, key, original)
    _ORIGINAL.clear()


def installed() -> bool:
    """Whether this process's sockets are guarded."""
    return bool(getattr(socket.socket.connect, "__loopback_guard__", False))


if os.environ.get("LOOPBACK_GUARD", "1") != "0":
    install()

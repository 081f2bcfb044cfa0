"""Is a Ray cluster there?  The address check shared by sharded training and ``cfn tune``, made before Ray starts.

Ray, given an address where nothing (or something else) answers, retries for minutes; this probe says what is
wrong within seconds.  Nothing here imports Ray.
"""
from __future__ import annotations

import importlib
import os
import re
import socket
from collections.abc import Callable

__all__ = ["PROBE_SECONDS", "probe_address"]

Label = Callable[[str], str]

#: How long the address probe waits for a connection, then for the cluster's first reply.
PROBE_SECONDS = 3.0


def _same(name: str) -> str:
    return name


def _client_package(what: str) -> None:
    """Ray Client (a ``ray://`` address) needs its package, grpcio."""
    try:
        importlib.import_module("grpc")
    except ImportError:
        raise ImportError(f"{what} needs Ray Client, whose package grpcio is not installed: pip install "
                          f"'ray[client]'") from None


def probe_address(address: str | None, label: Label = _same, timeout: float = PROBE_SECONDS,
                  client_check: Callable[[str], None] = _client_package) -> None:
    """A cluster address that answers, within ``timeout`` seconds per step, as a Ray cluster does (its GCS or
    Ray Client server speak gRPC: an HTTP/2 server's first frame is SETTINGS); for ``ray://``, ``client_check``
    says whether Ray Client's package is there.  Errors name the argument through ``label``."""
    if address is None:
        return
    if not isinstance(address, str):
        raise ValueError(f"{label('address')} must be 'auto', HOST:PORT or ray://HOST:PORT, got {address!r}")
    target = address
    if address == "auto":
        target = os.environ.get("RAY_ADDRESS", "")
        if target in ("", "auto", "local"):
            return                           # Ray looks for this machine's cluster and fails at once without one
    client = target.startswith("ray://")
    host, port = _host_port(target.removeprefix("ray://"), address, label)
    if client:
        client_check(f"{label('address')} {address}")
    reply = _first_reply(host, port, timeout)
    if isinstance(reply, OSError):
        raise ConnectionError(f"{label('address')} {address}: no Ray cluster answers at {host}:{port} "
                              f"({_reason(reply)}); start one there (ray start --head --port {port}) or leave "
                              f"{label('address')} out to start Ray inside this process") from None
    tls = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true", "yes")
    if not tls and not _is_http2_settings(reply):   # a TLS server waits for a TLS hello: no plain-text probe
        raise ConnectionError(f"{label('address')} {address}: the server at {host}:{port} does not answer as a Ray "
                              f"cluster (no gRPC reply within {timeout:g} s); give the head node's GCS port "
                              f"(ray start --head prints it) or ray://HOST:10001 for Ray Client")


def _host_port(text: str, address: str, label: Label) -> tuple[str, int]:
    match = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d{1,5})", text.strip())
    if not match or not 1 <= int(match.group(2)) <= 65535:
        raise ValueError(f"{label('address')} must be 'auto', HOST:PORT or ray://HOST:PORT, got {address!r}")
    return match.group(1), int(match.group(2))


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"   # length 0, type SETTINGS, no flags, stream 0


def _first_reply(host: str, port: int, timeout: float) -> bytes | OSError:
    """The first 9 bytes (an HTTP/2 frame header) the server sends after a client's connection preface: empty
    when it says nothing within ``timeout``; the error when nothing accepts the connection."""
    try:
        conn = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:                    # refused, unreachable, unknown host, or no answer to the SYN
        return exc
    data = b""
    with conn:
        try:
            conn.sendall(_HTTP2_PREFACE + _EMPTY_SETTINGS)
            while len(data) < 9:
                chunk = conn.recv(9 - len(data))
                if not chunk:
                    break
                data += chunk
        except OSError:                       # silent (timeout) or reset: not a Ray cluster either way
            pass
    return data


def _is_http2_settings(header: bytes) -> bool:
    return len(header) == 9 and header[3] == 0x04


def _reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"unknown host: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError):
        return "no answer"
    return exc.strerror or type(exc).__name__

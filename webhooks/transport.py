"""One webhook request, safe to aim at a URL a workspace chose (SSRF).

The target's name is resolved at delivery time, every address it resolves to is checked, and the
connection goes to the address that was checked (an httpcore network backend), so a DNS answer
that changes between the check and the connect (rebinding) cannot reach an internal address; the
TLS handshake and the Host header still use the URL's name, so certificates are verified as usual.
Redirects are never followed (httpcore has none), proxies from the environment are not used, the
whole request has one deadline, and only the first bytes of the answer are read.

The runtime's HTTP tools (workers/tools.py) use the same guard through `GuardedHTTPTransport`, an
httpx transport over the same network backend.
"""

import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass

import httpcore
import httpx

EXCERPT_BYTES = 500
# NAT64's well-known prefix: 64:ff9b::a.b.c.d reaches the IPv4 a.b.c.d
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class BlockedAddress(Exception):
    """The target resolves to an address that is not public."""


def is_public_address(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A globally routable unicast address: not loopback, private, link-local, unique-local,
    multicast, reserved, unspecified or shared; an IPv6 address that embeds an IPv4 one (mapped,
    6to4, Teredo, NAT64) is judged by that one too."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if ip.version == 6:
        embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(v4 is not None and not is_public_address(v4) for v4 in embedded):
            return False
    return ip.is_global and not (
        ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_unspecified
    )


def resolve(host: str, port: int, allow_private: bool) -> list[str]:
    """The addresses to connect to; BlockedAddress if any of them is not public (unless allowed)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise httpcore.ConnectError(f"the name does not resolve ({exc})") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not allow_private:
        for address in addresses:
            if not is_public_address(address.split("%", 1)[0]):
                raise BlockedAddress(f"{host} resolves to {address}, which is not a public address")
    return addresses


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose reads and writes all end by one deadline (httpcore's timeouts are per operation)."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float):
        self._stream, self._deadline = stream, deadline

    def _left(self, timeout: float | None) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the attempt's deadline passed")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._left(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        tls = self._stream.start_tls(ssl_context, server_hostname, self._left(timeout))
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """Resolves, checks, and connects to the checked address itself."""

    def __init__(self, allow_private: bool, deadline: float):
        self.allow_private, self.deadline = allow_private, deadline
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        last_error: Exception | None = None
        for address in resolve(host, port, self.allow_private):
            left = self.deadline - time.monotonic()
            if left <= 0:
                break
            try:
                stream = self._backend.connect_tcp(
                    address, port, min(timeout or left, left), local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
                continue
            return _DeadlineStream(stream, self.deadline)
        raise last_error or httpcore.ConnectTimeout("the attempt's deadline passed")

    def connect_unix_socket(self, *args, **kwargs):
        raise BlockedAddress("unix sockets are not webhook targets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class GuardedHTTPTransport(httpx.HTTPTransport):
    """httpx's transport over `GuardedBackend`: every connection of a request (one deadline of
    `timeout` seconds) goes to an address that was checked (BlockedAddress, raised as it is, when
    one is not public, unless `allow_private`). Use it in a client with `trust_env=False`, else
    proxies from the environment would take the request elsewhere."""

    def __init__(self, *, allow_private: bool, timeout: float):
        super().__init__(retries=0)
        self._pool.close()  # httpx builds its pool in __init__; this one connects through the guard
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl.create_default_context(),
            network_backend=GuardedBackend(allow_private, time.monotonic() + timeout),
            max_connections=1,
            retries=0,
        )


@dataclass(frozen=True)
class Answer:
    status_code: int | None
    excerpt: str
    error: str  # empty when an answer came


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float, allow_private: bool) -> Answer:
    """POST once; never raises for what the target does (refused, unreachable, slow, malformed)."""
    deadline = time.monotonic() + timeout
    pool = httpcore.ConnectionPool(
        ssl_context=ssl.create_default_context(),
        network_backend=GuardedBackend(allow_private, deadline),
        max_connections=1,
        retries=0,
    )
    try:
        with pool.stream(
            "POST",
            url,
            headers=list(headers.items()),
            content=body,
            extensions={"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}},
        ) as response:
            excerpt = b""
            for chunk in response.iter_stream():
                excerpt += chunk
                if len(excerpt) >= EXCERPT_BYTES:
                    break
            return Answer(response.status, excerpt[:EXCERPT_BYTES].decode("utf-8", "replace"), "")
    except BlockedAddress as exc:
        return Answer(None, "", f"blocked_address: {exc}")
    except httpcore.TimeoutException as exc:
        return Answer(None, "", f"timeout: {type(exc).__name__}")
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, ssl.SSLError, OSError) as exc:
        return Answer(None, "", f"{type(exc).__name__}: {str(exc)[:200]}")
    finally:
        pool.close()

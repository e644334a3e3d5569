"""Untrusted URLs: result links from any answer or callback, and where a download may connect.

Two checks. :func:`result_url` is syntax only (every parsed result URL passes it: http(s), a
host, no whitespace, a length cap). :class:`HostPolicy` decides where a download may go: https
only (http when allowed), and never to loopback, private, link-local (169.254/16: cloud
metadata) or other non-public addresses unless allowed. Names are checked on the addresses the
connection will really use, by the resolver of the download session (:class:`GuardedResolver`),
so a DNS name pointing at 127.0.0.1 is refused like the literal.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

import aiohttp
import attrs
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

__all__ = [
    "MAX_URL_CHARS",
    "GuardedResolver",
    "HostPolicy",
    "HostRefused",
    "canonical_host",
    "result_url",
]

MAX_URL_CHARS = 4096
"""Longest result URL accepted (Kie's are about 100 characters)."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NUMBER = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")
"""A last host label that makes a URL parser read the host as IPv4 (WHATWG "ends in a number")."""


def canonical_host(host: str) -> str:
    """``host``, unless it is IPv4 in a non-canonical form (``2130706433``, ``127.1``,
    ``0x7f.0.0.1``, ``0177.0.0.1``): resolvers read those as addresses, URL parsers refuse or
    disagree, so they are refused at once with :class:`ValueError`, never retried."""
    if ":" in host:  # IPv6 (its dotted tail is checked by ipaddress, not here)
        return host
    last = host.removesuffix(".").rsplit(".", 1)[-1]  # 'a.b.c.d.' ends in a number too
    if _NUMBER.fullmatch(last):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(
                f"{host[:80]!r} is not a canonical IPv4 address (write it as a.b.c.d)"
            ) from None
    return host


def result_url(value: str) -> str:
    """``value`` if it is an absolute http(s) URL with a host, else :class:`ValueError`."""
    if len(value) > MAX_URL_CHARS:
        raise ValueError(f"a result URL is longer than {MAX_URL_CHARS} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"a result URL holds whitespace or control characters: {value[:80]!r}")
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        raise ValueError(f"a result URL is malformed: {value[:80]!r}") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise ValueError(f"a result URL must be http(s) with a host, got {value[:80]!r}")
    canonical_host(host)
    return value


class HostRefused(OSError):
    """A download target the :class:`HostPolicy` forbids (an OSError, as aiohttp expects of a
    resolver)."""


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NOWHERE = ipaddress.IPv4Address("0.0.0.0")
"""Stands for an address that must be treated as private (0.0.0.0 is never public)."""


def _address(text: str) -> IPAddress | None:
    """The address a literal host reaches: an IPv6 address that carries an IPv4 one
    (IPv4-mapped ``::ffff:0:0/96``, NAT64 ``64:ff9b::/96``, deprecated IPv4-compatible
    ``::a.b.c.d``) is judged by that IPv4 address. Tunnels are never public: 6to4
    (``2002::/16``, deprecated by RFC 7526) and Teredo (``2001::/32``) reach a relay and then
    their embedded IPv4 (Python 3.13 no longer calls 6to4 global either), and local-use NAT64
    (``64:ff9b:1::/48``) maps to sites nobody can check here."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None or ip.teredo is not None:
        return _NOWHERE
    if ip in _NAT64 or (ip in _COMPATIBLE and int(ip) > 1):  # '::' and '::1' are IPv6's own
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _LOCAL_NAT64:
        return _NOWHERE
    return ip


def is_loopback_url(url: str) -> bool:
    """True if ``url``'s host is a loopback address or ``localhost``."""
    host = (urlsplit(url).hostname or "").lower()
    ip = _address(host)
    return host == "localhost" or (ip is not None and ip.is_loopback)


@attrs.frozen(kw_only=True)
class HostPolicy:
    """Where downloads may connect: the client's ``allow_http`` / ``allow_private_hosts``,
    plus ``loopback`` (true when the client's own ``base_url`` is loopback: local fakes)."""

    allow_http: bool = False
    allow_private: bool = False
    loopback: bool = False

    def address_ok(self, ip: IPAddress) -> bool:
        """Public unicast addresses always; loopback with ``loopback``; any with
        ``allow_private``."""
        if self.allow_private:
            return True
        if ip.is_loopback:
            return self.loopback
        return ip.is_global and not ip.is_multicast

    def check(self, url: str) -> None:
        """Raise :class:`HostRefused` unless ``url`` may be fetched (literal hosts checked here,
        names by :class:`GuardedResolver` at connect time)."""
        try:
            parsed = URL(url)
        except ValueError:
            raise HostRefused(f"malformed URL {url[:80]!r}") from None
        scheme, host = parsed.scheme.lower(), (parsed.host or "").lower()
        if scheme not in ("http", "https") or not host:
            raise HostRefused(f"only http(s) URLs with a host are fetched, got {url[:80]!r}")
        try:
            canonical_host(host)
        except ValueError as exc:
            raise HostRefused(str(exc)) from None
        local = self.loopback and is_loopback_url(url)
        if scheme == "http" and not (self.allow_http or local):
            raise HostRefused(f"plain http is refused (pass allow_http=True): {url[:80]!r}")
        ip = _address(host.split("%")[0])
        if ip is not None and not self.address_ok(ip):
            raise HostRefused(
                f"{host} is a loopback, private or link-local address "
                f"(pass allow_private_hosts=True to fetch it)"
            )
        if host == "localhost" and not (self.loopback or self.allow_private):
            raise HostRefused("localhost is refused (pass allow_private_hosts=True to fetch it)")


class GuardedResolver(AbstractResolver):
    """aiohttp's default resolver, keeping only the addresses :class:`HostPolicy` allows: the
    connection can then only use those (no DNS name or rebinding trick reaches 127.0.0.1)."""

    def __init__(self, policy: HostPolicy) -> None:
        self._policy = policy
        self._inner = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept = []
        for entry in found:
            ip = _address(entry["host"].split("%")[0])
            if ip is not None and self._policy.address_ok(ip):
                kept.append(entry)
        if not kept:
            raise HostRefused(
                f"{host} resolves only to loopback, private or link-local addresses "
                f"(pass allow_private_hosts=True to fetch it)"
            )
        return kept

    async def close(self) -> None:
        await self._inner.close()

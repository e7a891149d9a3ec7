"""Outbound address checks for callback URLs (SSRF guard), shared by the API and the dispatcher.

A callback URL must be ``http`` or ``https`` with a host. Unless private targets are allowed, every
address its host resolves to must be globally routable: a host with any loopback, private,
link-local, multicast, reserved or unspecified address is refused (one bad answer among good ones is
enough, since the connecting side might pick it). IPv4-mapped and 6to4 IPv6 addresses are judged by
the IPv4 address they carry.

The check runs at create time (the API) and again before every attempt (the dispatcher), which then
connects to the address that passed the check instead of resolving the name a second time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``(host, port) -> addresses``; raises ``OSError`` when the name does not resolve."""

RESOLVE_TIMEOUT_SECONDS = 5.0


class UnsafeCallbackURL(ValueError):
    """A callback URL that must not be used; the message starts with ``callback_url:``."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (``getaddrinfo``), addresses in its order, deduplicated."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str
    port: int

    @property
    def host_is_address(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def parse_callback_url(url: str) -> Destination:
    """Scheme, host and port of a callback URL; :class:`UnsafeCallbackURL` if it is not http(s)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeCallbackURL(f"callback_url: not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeCallbackURL("callback_url: must be an http:// or https:// URL")
    if not parts.hostname:
        raise UnsafeCallbackURL("callback_url: has no host")
    return Destination(scheme, parts.hostname, port or (443 if scheme == "https" else 80))


def address_problem(address: str) -> str | None:
    """Why connecting to ``address`` is refused (e.g. ``"loopback"``), or None if it is public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            ip = embedded
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("not globally routable", not ip.is_global),
    )
    return next((name for name, refused in checks if refused), None)


async def resolve_destination(
    destination: Destination, *, allow_private: bool, resolver: Resolver = system_resolver
) -> list[str]:
    """The addresses to connect to, every one of them checked (unless ``allow_private``)."""
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            addresses = list(await resolver(destination.host, destination.port))
    except (OSError, TimeoutError) as exc:
        reason = str(exc) or type(exc).__name__
        raise UnsafeCallbackURL(f"callback_url: cannot resolve host {destination.host!r}: {reason}") from exc
    if not addresses:
        raise UnsafeCallbackURL(f"callback_url: host {destination.host!r} has no address")
    if not allow_private:
        for address in addresses:
            problem = address_problem(address)
            if problem is not None:
                raise UnsafeCallbackURL(
                    f"callback_url: host {destination.host!r} resolves to {address}, a {problem} address; "
                    "private targets need LONGOPS_WEBHOOK_ALLOW_PRIVATE=true"
                )
    return addresses


async def check_callback_url(url: str, *, allow_private: bool, resolver: Resolver = system_resolver) -> None:
    """Refuse an unusable or (unless allowed) non-public callback URL with :class:`UnsafeCallbackURL`.

    With ``allow_private`` only the URL's form is checked: no name resolution is needed to accept it.
    """
    destination = parse_callback_url(url)
    if not allow_private:
        await resolve_destination(destination, allow_private=False, resolver=resolver)

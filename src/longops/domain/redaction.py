"""Secrets out of logged URLs: query values whose names say they are secrets, and userinfo.

Pure functions (no I/O). A name is secret when, lowercased with ``-`` read as ``_``, it is one of
:data:`SECRET_NAMES` or ends with one of :data:`SECRET_SUFFIXES` (``api_key``, ``x-api-key``,
``access_token``, ``sig``…). The value is replaced by ``REDACTED``; everything else is kept as sent.
"""

from __future__ import annotations

from urllib.parse import unquote_plus, urlsplit, urlunsplit

REDACTED = "REDACTED"
SECRET_NAMES = frozenset(
    {
        "key",
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "auth",
        "authorization",
        "sig",
        "signature",
        "code",
    }
)
SECRET_SUFFIXES = ("_key", "_token", "_secret", "_password", "_signature", "apikey")


def is_secret_name(name: str) -> bool:
    normal = unquote_plus(name).strip().lower().replace("-", "_")
    return normal in SECRET_NAMES or normal.endswith(SECRET_SUFFIXES)


def redact_query(query: str) -> str:
    """A query string with the value of every secret parameter replaced (order and form kept)."""
    if not query:
        return query
    parts = []
    for part in query.split("&"):
        name, sep, _value = part.partition("=")
        parts.append(f"{name}={REDACTED}" if sep and is_secret_name(name) else part)
    return "&".join(parts)


def redact_url(url: str) -> str:
    """A URL with its userinfo's password and its secret query values replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0] + ("?" + REDACTED if "?" in url else "")
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else netloc
    return urlunsplit(parts._replace(netloc=netloc, query=redact_query(parts.query)))

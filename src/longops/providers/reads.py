"""The poller's provider calls on aiohttp: status retrieve, results download, and the idempotent
deletion of an ingested batch's files.

Why not the SDK's own HTTP client (httpx): every ended batch costs the poller two calls, and each
cost about 1 ms of CPU through httpx (its transport layers, not the network), against about 0.2 ms
through aiohttp: measured against the simulator, a retrieve plus the results of 100 items took
3.3 ms of the poller's CPU through the SDK's client and 0.8 ms through aiohttp (before parsing).
For batches of a hundred items that was more than half of all the poller's work. The SDK still
decides the headers (authentication, API version) and still makes every other call; only GETs that
change nothing, and DELETEs whose repetition changes nothing more (an OpenAI batch's files once its
results are stored: two per batch, which through httpx doubled the poller's CPU for batches of a
hundred items), come here.

Credentials go only to the provider's own origin (scheme, host and port of its base URL): a URL
the provider names on another origin (a ``results_url`` elsewhere, a redirect) is fetched without
the credential headers (``x-api-key``, ``authorization``), so a hostile or broken answer cannot
collect the key. Redirects are followed by hand for that reason (aiohttp would keep ``x-api-key``).

Errors are :class:`~longops.providers.base.ProviderError`, classified as for the SDK's calls: a
connection that could not be made is ``ProviderUnavailable``; a timeout, a reset or a cut stream is
``ProviderOutcomeUnknown``; an error answer is classified by its status (:func:`status_error`), with
the type and message of the provider's error envelope ``{"error": {"type", "message"}}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping

import aiohttp
import orjson
import yarl

from longops.providers.base import (
    ProviderError,
    ProviderNotFound,
    ProviderOutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
)


def status_error(status: int, error_type: str | None, message: str) -> ProviderError:
    """An error answer, by what its status proves: 429 and 529 nothing was done (try later), 404 not
    found, other 4xx rejected, 5xx unknown."""
    error_type = error_type or ("api_error" if status >= 500 else "invalid_request_error")
    kind: type[ProviderError]
    if status in (429, 529):
        kind = ProviderUnavailable
    elif status == 404:
        kind = ProviderNotFound
    elif 400 <= status < 500:
        kind = ProviderRejected
    else:
        kind = ProviderOutcomeUnknown
    return kind(message, error_type=error_type, status_code=status)


CREDENTIAL_HEADERS = frozenset({"x-api-key", "authorization", "api-key"})
_MAX_REDIRECTS = 5


class ReadClient:
    """GETs with a fixed set of headers; ``timeout`` bounds the connect and each read (not a whole
    stream). The session is opened on first use, in the event loop that uses it. Credential
    headers are sent only to ``origin`` (see the module docstring)."""

    def __init__(self, *, headers: Mapping[str, str], timeout: float, origin: str) -> None:
        self._headers = {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}
        self._credentials = {k: v for k, v in headers.items() if k.lower() in CREDENTIAL_HEADERS}
        self._origin = yarl.URL(origin).origin()
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def get(self, url: str) -> bytes:
        """The body of a successful answer."""
        async with self._response(url, {}) as response:
            return await response.read()

    async def chunks(self, url: str, headers: Mapping[str, str]) -> AsyncGenerator[bytes, None]:
        """The body of a successful answer as it arrives. A stream that breaks raises
        ``ProviderOutcomeUnknown`` after the chunks already yielded."""
        async with self._response(url, headers) as response:  # its errors are classified there
            async for chunk in response.content.iter_any():
                yield chunk

    async def delete(self, url: str) -> None:
        """Delete what ``url`` names; an error answer raises as for a GET (404: ``ProviderNotFound``)."""
        async with self._response(url, {}, method="DELETE") as response:
            await response.read()

    @contextlib.asynccontextmanager
    async def _response(
        self, url: str, headers: Mapping[str, str], *, method: str = "GET"
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout, trust_env=True
            )
        try:
            async with self._follow(method, url, headers) as response:
                if response.status >= 400:
                    body = b""
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        body = await response.read()  # a broken error body: classify by status
                    raise error_answer(response.status, body)
                yield response
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(exc) from exc

    @contextlib.asynccontextmanager
    async def _follow(
        self, method: str, url: str, headers: Mapping[str, str]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """``method`` on ``url``, following redirects, with the credentials only on the provider's origin."""
        assert self._session is not None
        target = yarl.URL(url)
        for _ in range(_MAX_REDIRECTS + 1):
            sent = {**headers, **(self._credentials if target.origin() == self._origin else {})}
            async with self._session.request(method, target, headers=sent, allow_redirects=False) as response:
                location = response.headers.get("Location")
                if response.status not in (301, 302, 303, 307, 308) or location is None:
                    yield response
                    return
            target = target.join(yarl.URL(location))
        raise ProviderOutcomeUnknown(
            f"more than {_MAX_REDIRECTS} redirects from {url}", error_type="invalid_response"
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def error_answer(status: int, body: bytes) -> ProviderError:
    error_type, message = None, f"HTTP {status}: {body[:200]!r}"
    try:
        error = orjson.loads(body)["error"]
        # Anthropic's envelope names a type; OpenAI's may leave it null and give a code instead.
        kind = error.get("type") or error.get("code")
        error_type, message = (str(kind) if kind else None), str(error["message"])
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return status_error(status, error_type, message)


def transport_error(exc: BaseException) -> ProviderError:
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return ProviderUnavailable(f"could not connect: {exc}", error_type="connection_error")
    if isinstance(exc, TimeoutError):
        return ProviderOutcomeUnknown(f"timed out: {exc!r}", error_type="timeout_error")
    return ProviderOutcomeUnknown(f"connection failed: {exc!r}", error_type="connection_error")


async def lines_of(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The non-blank lines of a byte stream, without their line ends (the last may lack one)."""
    tail = b""
    async for chunk in chunks:
        lines = (tail + chunk).split(b"\n") if tail else chunk.split(b"\n")
        tail = lines.pop()
        for line in lines:
            if line and not line.isspace():
                yield line
    if tail and not tail.isspace():
        yield tail


def _chain(exc: BaseException) -> list[BaseException]:
    chain = [exc]
    while (cause := chain[-1].__cause__) is not None and cause not in chain:
        chain.append(cause)
    return chain


def caused_by(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """Whether ``exc`` or any exception it was raised from is one of ``kinds``."""
    return any(isinstance(link, kinds) for link in _chain(exc))


def root_cause(exc: BaseException) -> BaseException:
    return _chain(exc)[-1]

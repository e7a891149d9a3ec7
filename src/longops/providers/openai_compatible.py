"""The ``openai_compatible`` protocol: one live request per item, to an OpenAI-compatible server.

An item of endpoint ``/v1/chat/completions`` is POSTed, body as stored, to
``{base_url}/chat/completions`` (the base URL is written as for ``OPENAI_BASE_URL``, ending in
``/v1``), with ``Authorization: Bearer <key>`` when a key is set and ``X-Client-Request-Id`` set
to the item's id. :meth:`LiveClient.send` never raises: it answers what the engine must do next.

* 2xx with a JSON body: ``succeeded``; the response is stored compact, on one line.
* 429, 5xx, a connection that fails or a timeout: ``retry``, after ``Retry-After`` (seconds or an
  HTTP date; ``retry-after-ms`` too) when the server gives one.
* Any other 4xx, or a 2xx whose body is not JSON: ``errored`` with the server's error
  ``{"type", "message"}`` (``type`` is the envelope's ``type``, else its ``code``).

Why aiohttp and not the ``openai`` SDK: an emulated batch is thousands of small calls per second
from one process, and the SDK's httpx transport costs about four times aiohttp's CPU per call
(see :mod:`.reads`); the SDK would also parse each answer into models we would dump again, and
its retries would hide the ``Retry-After`` the engine schedules durably.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import orjson

from longops.domain.usage import Usage, model_of_response, usage_of_response
from longops.providers.base import ProviderError, ProviderRejected
from longops.providers.reads import error_answer, transport_error


@dataclass(frozen=True, slots=True)
class LiveAnswer:
    kind: Literal["succeeded", "errored", "retry"]
    response_json: str | None = None
    error: dict[str, Any] | None = None
    retry_after: float | None = None  # seconds, from the server's Retry-After
    usage: Usage | None = None  # of a succeeded answer (longops.domain.usage)
    model: str | None = None


class LiveClient:
    """POSTs to one OpenAI-compatible server; at most ``connections`` open at once. The session is
    opened on first use, in the event loop that uses it."""

    def __init__(self, *, base_url: str, api_key: str | None, timeout: float, connections: int) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # The proxy variables (HTTP(S)_PROXY, NO_PROXY) are read once here: aiohttp's trust_env
        # reads the environment again on every request, which cost 8 % of the sender's CPU.
        host = urllib.parse.urlsplit(self._base_url).hostname or ""
        proxy = urllib.request.getproxies().get(urllib.parse.urlsplit(self._base_url).scheme)
        self._proxy = None if proxy is None or urllib.request.proxy_bypass(host) else proxy
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def url(self, endpoint: str) -> str:
        """Where a request of ``endpoint`` (e.g. ``/v1/chat/completions``) goes."""
        return self._base_url + endpoint.removeprefix("/v1")

    async def send(self, endpoint: str, body: str, request_id: str) -> LiveAnswer:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._connections),
                proxy=self._proxy,
            )
        try:
            async with self._session.post(
                self.url(endpoint), data=body.encode(), headers={"X-Client-Request-Id": request_id}
            ) as response:
                payload = await response.read()
                status, headers = response.status, response.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _failed(transport_error(exc), None)
        if status < 300:
            try:
                body = orjson.loads(payload)
                return LiveAnswer(
                    "succeeded",
                    response_json=orjson.dumps(body).decode(),
                    usage=usage_of_response(body),
                    model=model_of_response(body),
                )
            except orjson.JSONDecodeError:
                message = f"HTTP {status} with a body that is not JSON: {payload[:200]!r}"
                return LiveAnswer("errored", error={"type": "invalid_response", "message": message})
        return _failed(error_answer(status, payload), retry_after(headers))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _failed(exc: ProviderError, after: float | None) -> LiveAnswer:
    error = {"type": exc.error_type, "message": exc.message}
    if isinstance(exc, ProviderRejected):  # a 4xx other than 429 (429 and 529: unavailable)
        return LiveAnswer("errored", error=error)
    return LiveAnswer("retry", error=error, retry_after=after)


def retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    with contextlib.suppress(TypeError, ValueError):
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000)
    value = headers.get("Retry-After")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError, IndexError):
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    return None

"""Bound a request's head (request line and headers) before anything parses it whole: HTTP 431.

Why this is a protocol and not ASGI middleware: by the time an ASGI app sees a request, the server
has read and parsed its whole head. uvicorn's httptools protocol accumulates a header of any size
(one unauthenticated request with 80 MB of ``Authorization`` held the event loop for 18 s, and every
other request with it), and it offers no limit of its own. :func:`bounded_httptools` subclasses it:
after each read, if the head is still incomplete and has passed ``max_bytes``, or once it holds more
than ``max_headers`` headers, the connection is answered 431 and closed, so at most ``max_bytes``
plus one read of a head is ever buffered. The h11 fallback gets the same byte bound through
uvicorn's ``h11_max_incomplete_event_size``.
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _TooManyHeaders(Exception):
    pass


def _answer(limit_name: str, limit: int, what: str) -> bytes:
    message = (
        f"request headers are too large: {what} (at most {limit}, {limit_name}); "
        "send fewer or smaller headers"
    )
    body = json.dumps({"error": {"type": "headers_too_large", "message": message}}).encode()
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
    )


def bounded_httptools(max_bytes: int, max_headers: int) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a request head of at most ``max_bytes`` and ``max_headers``."""

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_head = True
            self._head_bytes = 0
            self._header_count = 0
            self._refusal: bytes | None = None

        def on_message_begin(self) -> None:
            self._in_head, self._head_bytes, self._header_count = True, 0, 0
            super().on_message_begin()

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            if self._header_count > max_headers:
                self._refusal = _answer("MAX_HEADERS", max_headers, f"more than {max_headers} headers")
                raise _TooManyHeaders  # stops the parser; send_400_response answers with the refusal
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            if self._refusal is not None:
                return
            super().data_received(data)
            if self._refusal is None and self._in_head:
                self._head_bytes += len(data)
                if self._head_bytes > max_bytes:
                    self._refuse(_answer("MAX_HEADER_BYTES", max_bytes, f"more than {max_bytes} bytes"))

        def send_400_response(self, msg: str) -> None:
            if self._refusal is not None:
                self._refuse(self._refusal)
                return
            super().send_400_response(msg)

        def _refuse(self, answer: bytes) -> None:
            self._refusal = answer
            if not self.transport.is_closing():
                self.transport.write(answer)
                self.transport.close()

    return BoundedHttpToolsProtocol

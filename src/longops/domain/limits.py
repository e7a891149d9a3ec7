"""Size and shape limits of client input, as pure checks (the API applies them, with its settings).

Every check raises :class:`LimitExceeded`, whose message starts with the offending field and ends
with the setting that sets the limit, e.g. ``metadata: has 65 keys; at most 64 are allowed
(MAX_METADATA_KEYS)``.

Depth is measured without recursion, so a hostile document nested a million levels deep costs one
pass over its containers and cannot raise ``RecursionError``: ``0`` for a scalar, ``1`` for ``{}`` or
``[]``, ``2`` for ``{"a": []}`` and so on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

DEFAULT_MAX_JSON_DEPTH = 64


class LimitExceeded(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check_json(field: str, value: object, max_depth: int, *, text: bool = True) -> None:
    """``value`` (parsed JSON) nests at most ``max_depth`` levels, holds only finite numbers and, with
    ``text``, only strings (keys included) that are valid Unicode.

    Python's parser accepts what strict JSON does not: ``NaN``, ``Infinity`` and ``1e400`` (a float
    overflow) become non-finite floats that PostgreSQL's ``json`` type refuses, and ``\\ud800``
    escapes give a lone UTF-16 surrogate that no UTF-8 encoder accepts (stored, it would make every
    later response carrying it fail).
    """
    if isinstance(value, dict | list):
        stack: list[tuple[dict[Any, Any] | list[Any], int]] = [(value, 1)]
    else:
        stack = []
        _check_scalar(field, value, text)
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise LimitExceeded(field, f"is nested deeper than {max_depth} levels (MAX_JSON_DEPTH)")
        if text and isinstance(node, dict):
            for key in node:
                _check_scalar(field, key, text)
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
            elif isinstance(child, float | str):
                _check_scalar(field, child, text)


def _check_scalar(field: str, value: object, text: bool) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise LimitExceeded(field, "contains NaN or an infinite number, which JSON cannot hold")
    if text and isinstance(value, str):
        _check_text(field, value)


def _check_text(field: str, value: str) -> None:
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = value[exc.start]
        raise LimitExceeded(
            field, f"contains a lone UTF-16 surrogate ({ascii(bad)[1:-1]}), which is not valid Unicode"
        ) from None


def check_length(field: str, value: str | None, max_length: int, setting: str) -> None:
    if value is not None and len(value) > max_length:
        raise LimitExceeded(
            field, f"is {len(value)} characters long; at most {max_length} are allowed ({setting})"
        )


def json_size(value: object) -> int:
    """UTF-8 bytes of ``value`` as compact JSON (:func:`check_json` it first: the encoder recurses)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def check_metadata(
    metadata: Mapping[str, Any], *, max_keys: int, max_key_length: int, max_bytes: int, max_depth: int
) -> None:
    """Key count, key length, nesting depth and total size (compact JSON, UTF-8) of ``metadata``."""
    if len(metadata) > max_keys:
        raise LimitExceeded(
            "metadata", f"has {len(metadata)} keys; at most {max_keys} are allowed (MAX_METADATA_KEYS)"
        )
    for key in metadata:
        if len(key) > max_key_length:
            raise LimitExceeded(
                "metadata",
                f"key {key[:32]!r}{'…' if len(key) > 32 else ''} is {len(key)} characters long; "
                f"at most {max_key_length} are allowed (MAX_METADATA_KEY_LENGTH)",
            )
    check_json("metadata", metadata, max_depth)
    size = json_size(metadata)
    if size > max_bytes:
        raise LimitExceeded(
            "metadata", f"is {size} bytes as JSON; at most {max_bytes} are allowed (MAX_METADATA_BYTES)"
        )

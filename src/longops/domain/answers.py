"""What a person wants from a result line: the answer's text and its token usage, from whichever
provider's response body it is (pure; no I/O).

An Anthropic message carries ``content[].text`` and ``usage.input_tokens`` / ``output_tokens``; an
OpenAI chat completion carries ``choices[0].message.content`` and ``usage.prompt_tokens`` /
``completion_tokens``. Anything else has no text and no usage (``None``), never an error: a response
is the provider's own body, stored as it came.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int | None
    output_tokens: int | None


def answer_text(response: Any) -> str | None:
    """The text of the answer: every text block joined, or the first choice's message content."""
    if not isinstance(response, dict):
        return None
    content = response.get("content")
    if isinstance(content, list):
        texts = [b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)]
        return "".join(texts) if texts else None
    choices = response.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            return str(message["content"])
    body = response.get("body")  # an OpenAI batch output line's response wraps the completion
    return answer_text(body) if isinstance(body, dict) else None


def answer_usage(response: Any) -> Usage | None:
    """Tokens in and out, when the response says."""
    if not isinstance(response, dict):
        return None
    usage = response.get("usage")
    if not isinstance(usage, dict):
        body = response.get("body")
        return answer_usage(body) if isinstance(body, dict) else None
    tokens_in = usage.get("input_tokens", usage.get("prompt_tokens"))
    tokens_out = usage.get("output_tokens", usage.get("completion_tokens"))
    return Usage(
        tokens_in if isinstance(tokens_in, int) else None,
        tokens_out if isinstance(tokens_out, int) else None,
    )

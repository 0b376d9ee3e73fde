"""What the web room accepts from a socket: strict JSON and strictly typed command arguments.

Frames are parsed by pydantic-core's JSON reader (no recursion into the interpreter's stack, no
NaN/Infinity) and then checked for depth, number range and container size, so a hostile frame is
refused with a code before anything reads it. A command's arguments are then checked against the
command table (core/commands.py): strictly typed, unknown arguments refused, every refusal naming
the argument.
"""

from __future__ import annotations

import math
from typing import Any

import pydantic_core

from core.errors import Invalid

MAX_DEPTH = 32  # nesting of arrays/objects in one frame
MAX_SAFE_INT = 2**53 - 1  # what a browser's JSON.parse keeps exactly
MAX_ITEMS = 4096  # values in one frame, all containers together
MAX_ID = 128  # request ids

# wording for the codes of this module, for ``core.messages.describe(error, WORDING)``
WORDING = {
    "protocol.bad_json": "Send one JSON object per message ({problem}).",
    "protocol.too_deep": "The message is nested more than {max} levels deep.",
    "protocol.bad_number": "Numbers must be finite and at most 2^53 - 1 in size.",
    "protocol.too_large": "The message holds more than {max} values.",
    "protocol.bad_argument": "The command's argument {argument} {problem}.",
    "protocol.bad_field": "The message's {field} {problem}.",
}


def parse(text: str) -> dict[str, Any]:
    """One inbound frame as a dict, or ``Invalid`` with a ``protocol.*`` code."""
    try:
        data = pydantic_core.from_json(text, allow_inf_nan=False, cache_strings=False)
    except ValueError as e:  # the reader's message quotes the input: it stays out of the reply
        if "recursion limit" in str(e):
            raise Invalid("protocol.too_deep", max=MAX_DEPTH) from None
        raise Invalid("protocol.bad_json", problem="this is not valid JSON") from None
    if not isinstance(data, dict):
        raise Invalid("protocol.bad_json", problem="this is not an object")
    check(data)
    return data


def check(value: Any) -> None:
    """Depth, numbers and size of a parsed value, without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    items = 0
    while stack:
        v, depth = stack.pop()
        items += 1
        if items > MAX_ITEMS:
            raise Invalid("protocol.too_large", max=MAX_ITEMS)
        if isinstance(v, dict | list):
            if depth > MAX_DEPTH:
                raise Invalid("protocol.too_deep", max=MAX_DEPTH)
            stack.extend((c, depth + 1) for c in (v.values() if isinstance(v, dict) else v))
        elif isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        elif isinstance(v, int):
            if abs(v) > MAX_SAFE_INT:
                raise Invalid("protocol.bad_number")
        elif isinstance(v, float) and not math.isfinite(v):  # 1e999 reads as inf
            raise Invalid("protocol.bad_number")


def request_id(data: dict[str, Any]) -> str | int | None:
    """The frame's ``id``, echoed in the reply: a short string or a safe integer, else none."""
    cid = data.get("id")
    if isinstance(cid, str) and len(cid) <= MAX_ID:
        return cid
    if isinstance(cid, int) and not isinstance(cid, bool):
        return cid
    return None

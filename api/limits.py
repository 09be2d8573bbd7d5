"""ASGI guard for JSON bodies: size is checked before parsing (413), nesting before json (422),
then the JSON itself, strictly (422): UTF-8, no NaN/Infinity, numbers that fit a double or a
64-bit integer, no duplicate keys, no lone surrogate escapes, no NUL characters.

Python's json module recurses; a 1 MiB body of ``[[[[...`` would otherwise be a 500. What the
strict parse refuses would otherwise reach the routes: a 400 with no reason (not UTF-8, a
4,300-digit integer), a 500 (``"\\ud800"`` can't be encoded in the answer or the database),
or values that differ between parsers (duplicate keys).
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Awaitable, Callable, MutableMapping
from itertools import accumulate, count
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Possessive and always matching once started (an unclosed string runs to the end), so the scan
# is linear: a body of ``\"\"\"...`` made the backtracking form take hours per MiB.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# A NUL can only reach a JSON string as the escape \u0000 (raw control characters are invalid);
# one preceded by an even run of backslashes is an escape, an odd run is the text "\u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# Each bracket's depth change plus one (an opening one 2, a closing one 0): bytes can't be -1.
_STEP = bytes.maketrans(b"[]{}", b"\x02\x00\x02\x00")


def nesting_depth(body: bytes) -> int:
    """Deepest bracket nesting outside strings (a cheap scan, no recursion, loops in C)."""
    steps = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS).translate(_STEP)
    # After k brackets the depth is (sum of the first k steps) - k.
    return max(0, max(map(operator.sub, accumulate(steps), count(1)), default=0))


class _Refused(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _int64(text: str) -> int:
    value = int(text) if len(text) <= 20 else None
    if value is None or not -(2**63) <= value < 2**63:
        raise _Refused(f"integer {text[:40]} is too large (at most 64 bits)")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"duplicate key {key[:100]!r}")
            seen.add(key)
    return result


def json_problem(body: bytes) -> str | None:
    """Why this JSON body is refused, or None. Call it after the nesting check (json recurses)."""
    try:
        text = body.decode("utf-8-sig")
        value = json.loads(
            text,
            parse_constant=_no_constant,
            parse_int=_int64,
            object_pairs_hook=_unique_keys,
        )
        # One pass in C finds what parsing let through: 1e999 (inf) and lone surrogates.
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode()
    except UnicodeDecodeError as exc:
        return f"the body is not UTF-8 ({exc.reason} at byte {exc.start})"
    except UnicodeEncodeError:
        return "a string holds a lone surrogate escape (\\ud800-\\udfff is no character)"
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    except _Refused as exc:
        return str(exc)
    except ValueError:  # from dumps: only an infinite float is left to refuse
        return "a number is out of range (a double reaches about 1.8e308)"
    if _NUL_ESCAPE.search(text):  # PostgreSQL text can't hold it: a 500 at the INSERT
        return "a string holds a NUL character (\\u0000)"
    return None


def _is_json(content_type: bytes) -> bool:
    """The bodies FastAPI parses as JSON: application/json and application/*+json."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


async def _respond(send: Send, status: int, detail: object) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class JsonBodyLimit:
    """Guards every request body except the uploads at ``upload_paths`` (they stream to disk
    under their own, larger limit), whatever its content type: FastAPI reads any other body
    whole into memory."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, max_depth: int, upload_paths: tuple[str, ...] = ()
    ) -> None:
        self.app, self.max_bytes, self.max_depth = app, max_bytes, max_depth
        self.upload_paths = frozenset(upload_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        path, root = scope["path"], scope.get("root_path", "")
        if path.removeprefix(root) in self.upload_paths or path in self.upload_paths:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        too_big = f"request body larger than {self.max_bytes} bytes"
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _respond(send, 413, too_big)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _respond(send, 413, too_big)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if nesting_depth(body) > self.max_depth:
            problem = {
                "loc": ["body"],
                "msg": f"JSON nested deeper than {self.max_depth}",
                "type": "json_depth",
            }
            await _respond(send, 422, [problem])
            return
        is_json = _is_json(headers.get(b"content-type", b""))
        reason = json_problem(body) if body and is_json else None
        if reason is not None:
            await _respond(send, 422, [{"loc": ["body"], "msg": reason, "type": "json_invalid"}])
            return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

"""Who may talk to the dashboard: token, Host and Origin checks as one ASGI middleware.

- With a token (required when binding anything but loopback) every ``/api`` request, OTLP
  ingestion (``/v1/traces``) and the WebSocket need ``Authorization: Bearer <token>`` or
  ``?token=<token>``.
- Without one the server is on loopback, and the ``Host`` header must name loopback too: a
  web page on another site cannot reach it through DNS rebinding.
- Requests that change something (``POST``…) and WebSocket handshakes from a browser must come
  from the dashboard's own origin, so another site cannot drive them (CSRF).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["SecurityMiddleware", "is_loopback", "new_token"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROTECTED_PREFIXES = ("/api", "/v1")
"""Paths that need the token (the JSON API and OTLP ingestion); the page and its static
files hold no data."""
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; "
        b"base-uri 'none'; form-action 'none'",
    ),
]


def is_loopback(host: str) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``::1`` (with or without brackets).

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("[::1]"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A fresh random access token (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)


_HOST_HEADER = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{1,5})?")
"""A Host header: a name or an IP address (IPv6 in brackets), with an optional port; not
``evil.com@localhost``, ``localhost/evil.com`` or ``localhost#x``, which a URL parser reads
as localhost."""


def _hostname(host_header: str) -> str:
    """The host a Host header names ("" if it is no valid Host header)."""
    match = _HOST_HEADER.fullmatch(host_header)
    return match.group(1) if match else ""


class SecurityMiddleware:
    """Applies the rules of this module to HTTP and WebSocket requests."""

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        problem = self._check(scope, headers, host)
        if problem is not None:
            status, message = problem
            if kind == "websocket":
                # Closing before accepting makes the server answer the handshake with 403.
                await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
                return
            await _plain(send, status, message)
            return
        if kind == "websocket":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _check(self, scope: Scope, headers: dict[str, str], host: str) -> tuple[int, str] | None:
        path: str = scope.get("path", "")
        if self.token is None and not is_loopback(_hostname(host)):
            return 403, "this dashboard only answers requests to localhost"
        origin = headers.get("origin")
        unsafe = scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS
        if unsafe and origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            return 403, f"cross-origin request from {origin!r} refused"
        if self.token is not None and (
            path.startswith(PROTECTED_PREFIXES) or scope["type"] == "websocket"
        ):
            given = ""
            auth = headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            else:
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                given = (query.get("token") or [""])[0]
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return 401, "missing or wrong token (Authorization: Bearer <token> or ?token=)"
        return None


async def _plain(send: Send, status: int, message: str) -> None:
    body = message.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

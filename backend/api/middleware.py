"""Response headers every answer carries: browser hardening, and no caching of API data;
and the client address behind configured reverse proxies.

A plain ASGI middleware (not BaseHTTPMiddleware) so that streamed responses (file downloads,
server-sent events) pass through untouched apart from their headers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_SECURITY_POLICY", "SecurityHeaders", "TrustedProxies"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The SPA is one origin: its scripts, styles and the API. NiiVue draws with WebGL (no CSP
# source needed), reads volumes through blob: URLs and may start blob: workers; React and
# NiiVue set inline style attributes, hence 'unsafe-inline' for styles only (never scripts).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self' blob: data:",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

_ALWAYS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
]


class SecurityHeaders:
    """Adds the hardening headers; API answers (patient data) also get ``no-store``."""

    def __init__(self, app: ASGIApp, *, api_prefix: str) -> None:
        self.app = app
        self.api_prefix = api_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_api = scope["path"].startswith(self.api_prefix)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _ALWAYS:
                    if name.decode() not in headers:
                        headers.append(name.decode(), value.decode())
                if is_api:
                    headers["cache-control"] = "no-store"
                    headers["pragma"] = "no-cache"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class TrustedProxies:
    """Takes the client address (and scheme) from ``X-Forwarded-For`` / ``X-Forwarded-Proto``,
    but only on requests whose peer is one of the configured reverse proxies.

    Uvicorn's own handling is switched off (``proxy_headers=False`` in ``attrivue serve``): it
    trusts 127.0.0.1 by default, which let anything on the host pick its own address for the
    login limit and the audit log. With no proxies configured the headers are ignored.
    """

    def __init__(self, app: ASGIApp, *, networks: Sequence[IPNetwork]) -> None:
        self.app = app
        self.networks = list(networks)

    def _trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] in ("http", "websocket") and client and self._trusted(client[0]):
            headers = Headers(scope=scope)
            hops = [
                h.strip()
                for value in headers.getlist("x-forwarded-for")
                for h in value.split(",")
                if h.strip()
            ]
            # The nearest hops are appended last: walk back over our own proxies; the first
            # address that is not one of them is the client (a client may forge the rest).
            for hop in reversed(hops):
                if not self._trusted(hop):
                    scope = {**scope, "client": (hop, 0)}
                    break
            else:
                if hops:
                    scope = {**scope, "client": (hops[0], 0)}
            protos = [p.strip().lower() for p in headers.get("x-forwarded-proto", "").split(",")]
            if protos[-1] in ("http", "https"):
                secure = protos[-1] == "https"
                if scope["type"] == "websocket":
                    scope = {**scope, "scheme": "wss" if secure else "ws"}
                else:
                    scope = {**scope, "scheme": protos[-1]}
        await self.app(scope, receive, send)

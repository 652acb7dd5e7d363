"""Who may talk to the viewer: the ``Host`` it answers to, the origins it trusts, the token.

:class:`Guard` is a plain ASGI middleware in front of the app. In order, for every request:

1. ``Host`` must name one of ``allowed_hosts`` (default: the loopback names), so a DNS-rebinding
   page cannot reach a viewer on 127.0.0.1 under another name: 400 otherwise.
2. A request that carries ``Origin`` (a browser's cross-site request) must come from the page
   itself or from a ``cors_origins`` entry: 403 otherwise, before any work is done.
3. With a token, every ``/api/`` call needs ``Authorization: Bearer <token>``: 401 otherwise.
   The page, its static files and ``/health`` stay open, so the page can ask for the token.

:func:`check_bind` refuses to listen beyond loopback without a token.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pneumoseg.errors import PneumosegError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
TOKEN_ENV = "PNEUMOSEG_TOKEN"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse, in one line, to listen on a non-loopback address without a token."""
    if not is_loopback(host) and not token:
        raise PneumosegError(f"--host {host} would open the viewer to the network without a token: give "
                             f"--token (or set {TOKEN_ENV}), or listen on 127.0.0.1")
    if token is not None and len(token) < 16:
        raise PneumosegError("--token must be at least 16 characters (e.g. python -c 'import secrets; "
                             "print(secrets.token_urlsafe())')")


def host_name(host_header: str) -> str:
    """The name in a ``Host`` header, without the port (``[::1]:8000`` -> ``::1``)."""
    if host_header.startswith("["):
        return host_header[1:host_header.find("]")] if "]" in host_header else ""
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Guard:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app: Callable, *, token: str | None, allowed_hosts: Iterable[str] = LOOPBACK_NAMES,
                 cors_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = {h.lower().strip("[]") for h in allowed_hosts}
        self.cors_origins = {o.rstrip("/") for o in cors_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refusal(scope, headers)
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await _answer(send, *refusal)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, dict[str, str]] | None:
        host = headers.get("host", "")
        if "*" not in self.allowed_hosts and host_name(host).lower() not in self.allowed_hosts:
            return 400, "This server does not answer to that host name (see --allowed-hosts).", {}
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/") not in self.cors_origins | _own_origins(host):
            return 403, "Cross-origin request refused (see --cors-origin).", {}
        if self.token and scope["path"].startswith("/api/") and not self._authorised(headers):
            return 401, "This server needs its access token (Authorization: Bearer ...).", {
                "www-authenticate": 'Bearer realm="pneumoseg"'}
        return None

    def _authorised(self, headers: dict[str, str]) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), self.token.encode())


def _own_origins(host: str) -> set[str]:
    return {f"http://{host}", f"https://{host}"}


async def _answer(send: Send, status: int, detail: str, extra: dict[str, str]) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), *((k.encode(), v.encode()) for k, v in extra.items())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

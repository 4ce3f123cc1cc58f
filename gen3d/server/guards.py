"""Who may talk to the server, and with what: the access policy and the ASGI middleware enforcing it.

- Host allow-list (every request): a DNS-rebinding page reaches a local server under its own host name,
  so only the names the operator listens on and allows are accepted (loopback names by default).
- Token (every `/api/` request, when the policy has one; `gen3d serve` sets one on any non-loopback
  interface): `Authorization: Bearer TOKEN`, `?token=TOKEN`, or the cookie set when a page is first
  opened with `?token=TOKEN`, so the viewer's fetches, event streams and file links carry it by
  themselves. The cookie is SameSite=Strict, so another site's page never sends it.
- State-changing requests: same-origin only (a cross-site form post needs no CORS preflight) and a
  capped body, refused before it is read.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from fastapi.responses import JSONResponse

from gen3d.server.uploads import UploadTooLarge

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
MIN_TOKEN_CHARS = 16
TOKEN_HELP = ("open the URL `gen3d serve` printed (it ends in ?token=...), or send 'Authorization: Bearer TOKEN'")


@dataclass(frozen=True)
class AccessPolicy:
    """What `create_app` admits. The default is the loopback server: loopback Host names, no token,
    file options confined to the runs folder (plus `extra_paths`)."""

    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES
    token: str | None = None
    extra_paths: tuple[Path, ...] = field(default=())

    def host_allowed(self, host_header: str | None) -> bool:
        name = host_name(host_header or "")
        return bool(name) and name in {h.lower() for h in self.allowed_hosts}

    def token_ok(self, given: str | None) -> bool:
        return self.token is None or (given is not None and hmac.compare_digest(given.encode(), self.token.encode()))

    @property
    def cookie_name(self) -> str:
        """Per token, so two servers on one machine (cookies ignore ports) keep their own cookie."""
        return "gen3d_token_" + hashlib.sha256((self.token or "").encode()).hexdigest()[:8]


def host_name(host_header: str) -> str:
    """The name in a Host header without its port, lower-case ('[::1]:80' -> '::1')."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(listen_host: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Loopback names, the interface listened on (unless a wildcard) and the operator's names."""
    names = [*LOOPBACK_NAMES]
    if listen_host not in WILDCARD_HOSTS:
        names.append(host_name(f"[{listen_host}]" if ":" in listen_host else listen_host))
    names += [host_name(n) or n.lower() for n in extra]
    return tuple(dict.fromkeys(n for n in names if n))


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _query_token(scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


def _presented_token(headers: dict[str, str], scope, cookie_name: str) -> tuple[str | None, bool]:
    """(token the request carries, whether it came in the URL) from header, query or cookie."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip(), False
    if (query := _query_token(scope)) is not None:
        return query, True
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:  # noqa: BLE001 - a malformed Cookie header carries no token
        return None, False
    return (cookie[cookie_name].value if cookie_name in cookie else None), False


class AccessGuard:
    """ASGI middleware: Host allow-list on every request, the token on every API request."""

    def __init__(self, app, policy: AccessPolicy):
        self.app, self.policy = app, policy

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # lifespan; the app has no websockets
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        host = headers.get("host")
        if not host:
            return await error_response(400, "Host: the header is required")(scope, receive, send)
        if not self.policy.host_allowed(host):
            message = (f"Host '{host[:100]}' is not allowed here; start `gen3d serve` with "
                       f"--allow-host NAME for each name clients use")
            return await error_response(421, message)(scope, receive, send)
        if self.policy.token is None:
            return await self.app(scope, receive, send)
        token, in_url = _presented_token(headers, scope, self.policy.cookie_name)
        if not self.policy.token_ok(token):
            if scope["path"].startswith("/api/") or token is not None:
                why = "wrong token" if token is not None else "this server needs a token"
                return await error_response(401, f"{why}: {TOKEN_HELP}")(scope, receive, send)
            return await self.app(scope, receive, send)  # the viewer's page and scripts are public
        await self.app(scope, receive, self._set_cookie(send) if in_url else send)

    def _set_cookie(self, send):
        """Remember a token given in the URL, so the page's later requests need not repeat it."""
        cookie = f"{self.policy.cookie_name}={self.policy.token}; Path=/; HttpOnly; SameSite=Strict"

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"set-cookie", cookie.encode("latin-1"))]}
            await send(message)

        return send_with_cookie


class RequestGuard:
    """ASGI middleware for requests that change state: same-origin only, and a capped body size."""

    def __init__(self, app, max_body: int):
        self.app, self.max_body = app, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        origin = headers.get("origin")
        if origin and urlsplit(origin).netloc != headers.get("host"):
            return await error_response(403, f"cross-origin request from {origin[:100]} refused")(scope, receive, send)
        length = headers.get("content-length")
        if length is not None and not (length.isascii() and length.isdigit() and len(length) < 19
                                       and int(length) <= self.max_body):
            message = f"request body over the {self.max_body // 2**20} MiB upload limit"
            return await error_response(413, message)(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise UploadTooLarge(f"request body over the {self.max_body // 2**20} MiB upload limit")
            return message

        await self.app(scope, counted_receive, send)

"""What routes depend on: API keys (`REFINERY_API_KEYS` for /v1/*, `REFINERY_ADMIN_KEY` for operator
endpoints) and the objects the app built at start-up (kept on `app.state`), with a 503 while the
model is still loading."""

from __future__ import annotations

import hmac

from fastapi import Header, Request

from service.errors import APIError
from service.learn.analyst import Analyst
from service.learn.review import PrincipleBook
from service.rollout.server import ServerRollout
from service.serving.chat import ChatService
from service.store import Store


def bearer(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def _matches(given: str, keys) -> bool:
    # Constant-time comparison: no timing hints about how much of a key was right.
    return any(hmac.compare_digest(given.encode(), k.encode()) for k in keys if k)


def require_key(request: Request, authorization: str | None = Header(None)) -> None:
    settings = request.app.state.settings
    keys = settings.api_key_set
    if not keys:
        return
    given = bearer(authorization)
    if given is None:
        raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", None, "missing_api_key")
    if not _matches(given, keys | {settings.admin_key}):
        raise APIError(401, "incorrect API key", None, "invalid_api_key")


def require_admin(request: Request, authorization: str | None = Header(None)) -> str:
    """Operator endpoints are closed until an admin key is set. Returns the operator's name."""
    settings = request.app.state.settings
    if not settings.admin_key:
        raise APIError(401, "operator endpoints are disabled: set REFINERY_ADMIN_KEY", None, "admin_disabled")
    given = bearer(authorization)
    if given is None:
        raise APIError(401, "missing admin key: send 'Authorization: Bearer <admin key>'", None, "missing_api_key")
    if not _matches(given, {settings.admin_key}):
        raise APIError(401, "incorrect admin key", None, "invalid_api_key")
    return request.headers.get("x-operator", "admin")[:64]


def _loaded(value, what: str = "the model is still loading"):
    if value is None:
        raise APIError(503, what, None, "model_loading")
    return value


def chat_service(request: Request) -> ChatService:
    return _loaded(request.app.state.chat)


def rollout(request: Request) -> ServerRollout:
    return _loaded(getattr(request.app.state, "rollout", None))


def analyst(request: Request) -> Analyst:
    return _loaded(request.app.state.analyst)


def store(request: Request) -> Store:
    return request.app.state.store


def book(request: Request) -> PrincipleBook:
    return PrincipleBook(request.app.state.store)

"""Every error leaves the API in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.

Request validation answers 400 (not FastAPI's 422), an `APIError` its own status, anything
unexpected 500 with no detail. `responses(...)` declares a route's error statuses in the OpenAPI
document with this body.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.protocol import ErrorResponse, UnsupportedParameter
from service.errors import APIError, error_body

DESCRIPTIONS = {400: "The request is invalid; nothing was changed.", 401: "No key, or a wrong key.",
                404: "No such resource.", 409: "Conflicts with what is stored.",
                413: "The request body is too large.", 503: "The model is still loading."}


def responses(*statuses: int) -> dict:
    """OpenAPI `responses` for these error statuses, each with the OpenAI error body."""
    return {s: {"model": ErrorResponse, "description": DESCRIPTIONS[s]} for s in statuses}


def openapi_document(app: FastAPI) -> dict:
    """FastAPI's OpenAPI document with what this API really answers: every operation that takes
    input declares 400 with the OpenAI error body (validation never answers FastAPI's 422)."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    bad_request = {"description": DESCRIPTIONS[400],
                   "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    for ops in doc.get("paths", {}).values():
        for op in ops.values():
            had_422 = op["responses"].pop("422", None) is not None
            if had_422 or op.get("requestBody") or op.get("parameters"):
                op["responses"].setdefault("400", bad_request)
    for unused in ("HTTPValidationError", "ValidationError"):
        doc.get("components", {}).get("schemas", {}).pop(unused, None)
    app.openapi_schema = doc
    return doc


def error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status)


def _loc_to_param(loc) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def install(app: FastAPI) -> None:
    app.openapi = lambda: openapi_document(app)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        for err in errors:
            ctx_error = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_error, UnsupportedParameter):
                return error_response(400, str(ctx_error), ctx_error.param, "unsupported_parameter")
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        param = _loc_to_param(first.get("loc", ()))
        msg = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            return error_response(400, "the request body is not valid JSON", None, "invalid_json")
        return error_response(400, f"{param}: {msg}" if param else msg, param, "invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), None, None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return error_response(500, "internal server error", None, "internal_error")

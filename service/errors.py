"""The error every layer of the service raises for a request it refuses, in OpenAI's terms.

An `APIError` carries the HTTP status, a message for the client, the offending parameter and a
machine-readable code; service.api.errors turns it into OpenAI's error body
{"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": TYPES.get(status, "server_error"), "param": param, "code": code}}

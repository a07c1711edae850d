"""ASGI middleware: the request-body limit (declared or streamed), and the request counter."""

from __future__ import annotations

from fastapi import Request

from service.api.errors import error_response


class BodyLimit:
    """Refuses request bodies over the limit, declared (Content-Length) or streamed (chunked)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.limit:
                return await self._refuse(scope, receive, send)
            return await self.app(scope, receive, send)
        # No declared length (chunked): read it all, within the limit, then replay it.
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.limit:
                return await self._refuse(scope, receive, send)
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        resp = error_response(400, f"the request body is larger than {self.limit} bytes", None, "body_too_large")
        await resp(scope, receive, send)


def count_requests(metrics):
    """HTTP middleware counting requests by route template and status."""

    async def middleware(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.requests.labels(getattr(route, "path", "unmatched"), str(response.status_code)).inc()
        return response

    return middleware

"""ASGI middleware: the request-body limit (declared or streamed), and the request counter."""

from __future__ import annotations

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


class CountRequests:
    """Counts requests by route template and status. Plain ASGI rather than Starlette's
    `BaseHTTPMiddleware`, which wraps `receive` so that an endpoint's `request.is_disconnected()`
    cannot see its client leave."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = []

        async def send_counting(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            route = scope.get("route")
            self.metrics.requests.labels(getattr(route, "path", "unmatched"),
                                         str(status[0]) if status else "500").inc()

"""The FastAPI application, built by `create_app(settings)`; nothing heavy happens at import."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from service import admin, admin_adapters, errors
from service.auth import require_key
from service.chat import ChatService
from service.engine import Engine
from policies.scope import ScopeMatcher
from service.analysis import Analyst
from service.jobs import JobScheduler
from service.lifecycle import Lifecycle
from service.outcomes import OutcomeCollector
from service.errors import APIError
from service.metrics import EngineCollector, Metrics
from service.protocol import ChatCompletionRequest, FeedbackRequest
from service.settings import Settings
from service.store import Store, new_id

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


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
        resp = errors.error_response(400, f"the request body is larger than {self.limit} bytes", None, "body_too_large")
        await resp(scope, receive, send)


def set_torch_threads(n: int) -> None:
    """Fewer intra-op threads than cores: with every core busy, OpenMP threads wait on each
    other at every matmul and decoding slows down twenty-fold (measured on 2 cores)."""
    import os

    import torch

    torch.set_num_threads(n or max(1, min(8, (os.cpu_count() or 2) - 1)))


async def watch_registry(app: FastAPI) -> None:
    """Apply registry changes made elsewhere (the CLI) and judge canaries, off the event loop."""
    settings = app.state.settings
    while True:
        await asyncio.sleep(settings.registry_poll_s)
        lifecycle = app.state.lifecycle
        try:
            if lifecycle is not None:
                await run_in_threadpool(lifecycle.tick)
            if app.state.scheduler is not None:
                await run_in_threadpool(app.state.scheduler.tick)
        except Exception:
            log.exception("background tick failed")


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        store = Store(settings.db_path)
        interrupted = store.mark_interrupted()
        if interrupted:
            log.warning("%d generations were cut off by the last shutdown; marked aborted", interrupted)
        app.state.store = store
        app.state.chat = None
        app.state.lifecycle = None
        app.state.analyst = None
        app.state.load_error = None

        def attach(eng: Engine) -> None:
            # Active and canary adapters are loaded before the server reports healthy, so a
            # restart serves the same versions as before it.
            lifecycle = Lifecycle(settings, store, eng)
            lifecycle.router.sync(force=True)
            analyst = Analyst(settings, store, eng)
            if settings.background_analysis:
                analyst.start()
            app.state.engine = eng
            app.state.lifecycle = lifecycle
            app.state.analyst = analyst
            app.state.chat = ChatService(settings, store, eng, metrics, router=lifecycle.router,
                                         matcher=ScopeMatcher(llm=analyst.teacher, on_failure=analyst.record_failure),
                                         on_stored=analyst.poke)
            metrics.model_loaded.set(1)

        if engine is not None:
            attach(engine)
            loader = None
        else:
            # Load in the background so /health can answer 503 while the model loads.
            def load() -> None:
                try:
                    from adapters.base import load_model

                    set_torch_threads(settings.torch_threads)
                    lm = load_model(settings.model, settings.model_cache_dir, settings.device)
                    attach(Engine(lm.model, lm.tokenizer, lm.model_id, settings.max_batch_size))
                    log.info("model %s loaded on %s (%s)", lm.model_id, lm.device, lm.dtype)
                except Exception as exc:  # reported by /health, never swallowed
                    log.exception("model failed to load")
                    app.state.load_error = str(exc)

            loader = threading.Thread(target=load, name="refinery-model-load", daemon=True)
            loader.start()
        app.state.scheduler = JobScheduler(settings, store) if settings.run_jobs else None
        watch = asyncio.create_task(watch_registry(app))
        yield
        watch.cancel()
        if app.state.analyst is not None:
            app.state.analyst.stop()
        eng = getattr(app.state, "engine", None)
        if eng is not None and engine is None:
            eng.close()

    app = FastAPI(title="Refinery", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    errors.install(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.include_router(admin.router)
    app.include_router(admin_adapters.router)
    metrics.registry.register(OutcomeCollector(lambda: getattr(app.state, "store", None)))
    metrics.registry.register(EngineCollector(lambda: getattr(app.state, "engine", None)))

    @app.get("/review", include_in_schema=False)
    async def review_page():
        return FileResponse(STATIC / "review.html", media_type="text/html")

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.requests.labels(getattr(route, "path", "unmatched"), str(response.status_code)).inc()
        return response

    def chat_service(request: Request) -> ChatService:
        chat = request.app.state.chat
        if chat is None:
            raise APIError(503, "the model is still loading", None, "model_loading")
        return chat

    def store_of(request: Request) -> Store:
        return request.app.state.store

    # -- health and metrics --------------------------------------------------------------
    @app.get("/health")
    async def health(request: Request):
        if request.app.state.load_error:
            return JSONResponse({"status": "error", "error": request.app.state.load_error}, status_code=503)
        if request.app.state.chat is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ok", "model": request.app.state.engine.model_id}

    @app.get("/metrics")
    async def prometheus_metrics():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- OpenAI-compatible API -----------------------------------------------------------
    @app.get("/v1/models", dependencies=[Depends(require_key)])
    async def list_models(chat: ChatService = Depends(chat_service)):
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "refinery"} for name in chat.model_names()
        ]}

    @app.post("/v1/chat/completions", dependencies=[Depends(require_key)])
    async def chat_completions(
        req: ChatCompletionRequest,
        chat: ChatService = Depends(chat_service),
        x_conversation_id: str | None = Header(None),
    ):
        record, job = await chat.prepare(req, x_conversation_id)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                chat.stream(record, job, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await chat.complete(record, job)

    # -- explicit feedback ---------------------------------------------------------------
    def feedback_object(row: dict) -> dict:
        return {"object": "feedback", **row}

    @app.post("/v1/feedback", dependencies=[Depends(require_key)])
    async def post_feedback(body: FeedbackRequest, request: Request, store: Store = Depends(store_of)):
        if body.comment is not None and len(body.comment) > settings.max_comment_chars:
            raise APIError(400, f"comment is longer than {settings.max_comment_chars} characters", "comment", "comment_too_long")
        if body.correction is not None and len(body.correction) > settings.max_correction_chars:
            raise APIError(400, f"correction is longer than {settings.max_correction_chars} characters", "correction", "correction_too_long")
        completion = await run_in_threadpool(store.get_completion, body.completion_id)
        if completion is None:
            raise APIError(404, f"no completion with id '{body.completion_id}'", "completion_id", "completion_not_found")
        record = {
            "id": body.id or new_id("fb-"),
            "created": time.time(),
            "completion_id": body.completion_id,
            "conversation_id": completion["conversation_id"],
            **body.model_dump(include={"thumb", "score", "reason", "comment", "correction", "user"}),
        }
        stored, created = await run_in_threadpool(store.add_feedback, record)
        if stored["completion_id"] != body.completion_id:
            raise APIError(409, f"feedback id '{record['id']}' is already used for another completion", "id", "id_conflict")
        if not created:
            differ = [k for k in ("thumb", "score", "reason", "comment", "correction", "user") if stored.get(k) != record.get(k)]
            if differ:  # a retry repeats its body; a different body under the same id is a mistake
                raise APIError(409, f"feedback id '{record['id']}' is already used with other values ({', '.join(differ)}); "
                                    "send new feedback under a new id, or DELETE the old one first",
                               "id", "idempotency_mismatch")
        if created:
            if request.app.state.analyst is not None:
                request.app.state.analyst.poke()
            for kind in ("thumb", "score", "reason", "comment", "correction"):
                if stored.get(kind) is not None:
                    metrics.feedback.labels(f"{kind}_{stored[kind]}" if kind == "thumb" else kind).inc()
        return JSONResponse(feedback_object(stored), status_code=201 if created else 200)

    @app.get("/v1/feedback", dependencies=[Depends(require_key)])
    async def list_feedback(
        store: Store = Depends(store_of),
        completion_id: str | None = None,
        conversation_id: str | None = None,
        since: float | None = Query(None, description="Unix time; only feedback created at or after it."),
        limit: int = Query(100, ge=1, le=1000),
    ):
        rows = await run_in_threadpool(store.list_feedback, completion_id, conversation_id, since, limit)
        return {"object": "list", "data": [feedback_object(r) for r in rows]}

    @app.delete("/v1/feedback/{feedback_id}", dependencies=[Depends(require_key)])
    async def delete_feedback(feedback_id: str, store: Store = Depends(store_of)):
        if not await run_in_threadpool(store.delete_feedback, feedback_id):
            raise APIError(404, f"no feedback with id '{feedback_id}'", "feedback_id", "feedback_not_found")
        return {"id": feedback_id, "object": "feedback.deleted", "deleted": True}

    return app

"""The FastAPI application, built by `create_app(settings)`: wiring only, nothing heavy at import.

`lifespan` opens the store, loads the model in a thread (so /health can answer 503 meanwhile),
then builds what serves (the engine, the rollout with its router, the chat service), what learns
(the analyst, the feedback service) and the refinement scheduler, keeping them on `app.state`;
a background task applies registry changes and judges canaries. The routers are in service.api.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from policies.teacher import is_capable
from service.api import (adapters, conversations, corrections, errors, feedback, jobs, natural, ops, openai, principles,
                         refinements)
from service.api.middleware import BodyLimit, CountRequests
from service.distill.worker import JobScheduler
from service.learn.analyst import Analyst
from service.learn.feedback import FeedbackService
from service.metrics import EngineCollector, Metrics, OutcomeCollector
from service.rollout.server import ServerRollout
from service.serving.chat import ChatService
from service.serving.engines import Engine, open_engine
from service.serving.scope import ServingScope
from service.settings import Settings
from service.store import Store

log = logging.getLogger(__name__)


async def watch_registry(app: FastAPI) -> None:
    """Apply registry changes made elsewhere (the CLI, the job) and judge canaries, off the event loop."""
    settings = app.state.settings
    while True:
        await asyncio.sleep(settings.registry_poll_s)
        try:
            if app.state.rollout is not None:
                await run_in_threadpool(app.state.rollout.tick)
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
        interrupted = store.exchanges.mark_interrupted()
        if interrupted:
            log.warning("%d generations were cut off by the last shutdown; marked aborted", interrupted)
        app.state.store = store
        app.state.chat = app.state.rollout = app.state.analyst = app.state.engine = None
        app.state.load_error = None
        app.state.feedback = FeedbackService(settings, store, metrics,
                                             on_stored=lambda: app.state.analyst and app.state.analyst.poke())

        def attach(eng: Engine) -> None:
            # Active and canary adapters are loaded before the server reports healthy, so a
            # restart serves the same versions as before it.
            rollout = ServerRollout(settings, store, eng)
            rollout.router.sync(force=True)
            rollout.reject_unloadable()
            analyst = Analyst(settings, store, eng)
            scope = ServingScope(settings, store, llm=analyst.teacher, on_failure=analyst.record_failure)
            scope.start()
            if not is_capable(analyst.teacher):
                analyst.classifiers.warm()
            app.state.scope = scope
            if settings.background_analysis:
                analyst.start()
            app.state.engine, app.state.rollout, app.state.analyst = eng, rollout, analyst
            app.state.chat = ChatService(settings, store, eng, metrics, rollout.router,
                                         matcher=scope,
                                         on_stored=analyst.poke)
            metrics.model_loaded.set(1)

        if engine is not None:
            attach(engine)
        else:
            def load() -> None:
                try:
                    eng = open_engine(settings)
                    attach(eng)
                    log.info("model %s served by %s", eng.model_id, eng.health()["kind"])
                except Exception as exc:  # reported by /health, never swallowed
                    log.exception("model failed to load")
                    app.state.load_error = str(exc)

            threading.Thread(target=load, name="refinery-model-load", daemon=True).start()
        app.state.scheduler = JobScheduler(settings, store) if settings.run_jobs else None
        watch = asyncio.create_task(watch_registry(app))
        yield
        watch.cancel()
        if app.state.analyst is not None:
            app.state.analyst.stop()
        if app.state.engine is not None and engine is None:
            app.state.engine.close()

    app = FastAPI(title="Refinery", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    errors.install(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(CountRequests, metrics=metrics)
    for module in (ops, openai, feedback, principles, natural, corrections, refinements, conversations, jobs, adapters):
        app.include_router(module.router)
    metrics.registry.register(OutcomeCollector(lambda: getattr(app.state, "store", None)))
    metrics.registry.register(EngineCollector(lambda: getattr(app.state, "engine", None)))
    return app

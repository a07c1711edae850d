"""Routes for running the service: `GET /health`, `GET /metrics` (Prometheus) and the review page."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter()


@router.get("/health", responses={503: {"description": "The model is loading or failed to load, or no engine replica is up."}})
async def health(request: Request):
    if request.app.state.load_error:
        return JSONResponse({"status": "error", "error": request.app.state.load_error}, status_code=503)
    if request.app.state.chat is None:
        return JSONResponse({"status": "loading"}, status_code=503)
    engine = request.app.state.engine
    state = engine.health()
    if not state["up"]:
        return JSONResponse({"status": "unavailable", "model": engine.model_id, "engine": state}, status_code=503)
    return {"status": "ok", "model": engine.model_id, "engine": state}


@router.get("/metrics")
async def prometheus_metrics(request: Request):
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/review", include_in_schema=False)
async def review_page():
    return FileResponse(STATIC / "review.html", media_type="text/html")

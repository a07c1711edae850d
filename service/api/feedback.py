"""Explicit feedback routes: `POST /v1/feedback`, `GET /v1/feedback`, `DELETE /v1/feedback/{id}`.

Thin: parse, call service.learn.feedback.FeedbackService or the store, serialise.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service.api.deps import require_key, store
from service.api.errors import responses
from service.api.protocol import FeedbackRequest
from service.errors import APIError
from service.store import Store

router = APIRouter(prefix="/v1/feedback", dependencies=[Depends(require_key)], responses=responses(400, 401))


def feedback_object(row: dict) -> dict:
    return {"object": "feedback", **row}


@router.post("", status_code=201, responses={**responses(404, 409), 200: {"description": "A retry: the record stored before."}})
async def post_feedback(body: FeedbackRequest, request: Request):
    values = body.model_dump(include={"thumb", "score", "reason", "comment", "correction", "user"})
    stored, created = await run_in_threadpool(request.app.state.feedback.record, body.completion_id, values, body.id)
    return JSONResponse(feedback_object(stored), status_code=201 if created else 200)


@router.get("")
async def list_feedback(
    db: Store = Depends(store),
    completion_id: str | None = None,
    conversation_id: str | None = None,
    since: float | None = Query(None, description="Unix time; only feedback created at or after it."),
    limit: int = Query(100, ge=1, le=1000),
):
    rows = await run_in_threadpool(db.feedback.list, completion_id, conversation_id, since, limit)
    return {"object": "list", "data": [feedback_object(r) for r in rows]}


@router.delete("/{feedback_id}", responses=responses(404))
async def delete_feedback(feedback_id: str, db: Store = Depends(store)):
    if not await run_in_threadpool(db.feedback.delete, feedback_id):
        raise APIError(404, f"no feedback with id '{feedback_id}'", "feedback_id", "feedback_not_found")
    return {"id": feedback_id, "object": "feedback.deleted", "deleted": True}

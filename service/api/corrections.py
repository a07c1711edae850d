"""Operator routes for corrections (admin key): the corrected answers users sent with explicit
feedback, which the refinement job trains on, and the operator's verdict on each (a rejected
correction never trains). Thin: validation and one call to service.store.corrections each."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from service.api.deps import require_admin, store
from service.api.errors import responses
from service.api.protocol import CorrectionReview
from service.errors import APIError
from service.store import Store

router = APIRouter(prefix="/admin/corrections", responses=responses(400, 401))


def item(row: dict) -> dict:
    """A stored correction as the API shows it: the request is the last user turn it answers."""
    request = next((m.get("content") for m in reversed(row.get("messages") or []) if m.get("role") == "user"), None)
    return {"id": row["id"], "created": row["created"], "completion_id": row["completion_id"], "request": request,
            "response": row["response"], "correction": row["correction"], "comment": row["comment"],
            "status": row["status"], "distilled_version": row["distilled_version"],
            "adapter_version": row["adapter_version"]}


@router.get("")
async def list_corrections(status: Literal["accepted", "rejected"] | None = None,
                           limit: int = Query(100, ge=1, le=1000),
                           db: Store = Depends(store), _: str = Depends(require_admin)):
    """Corrections, newest first; a correction no operator rejected counts as accepted."""
    return {"object": "list", "data": [item(r) for r in await run_in_threadpool(db.corrections.list, status, limit)]}


@router.put("/{feedback_id}", responses=responses(404))
async def review_correction(feedback_id: str, body: CorrectionReview, db: Store = Depends(store),
                            actor: str = Depends(require_admin)):
    """Accept or reject the correction of feedback record `feedback_id`; the verdict is audited."""
    row = await run_in_threadpool(db.corrections.review, feedback_id, body.status, body.actor or actor, body.reason)
    if row is None:
        raise APIError(404, f"no correction with feedback id '{feedback_id}'", "feedback_id", "not_found")
    return item(row)

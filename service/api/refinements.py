"""Operator routes for refinements (admin key): the better answers the background analyst sampled
and verified for users' complaints (DRIFT), and the operator's verdict on each. Nothing trains
before an operator accepts it, as is, or with a better answer of their own (required when the
sampled one failed its verification). Thin: validation and one call to service.store.refinements each."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from service.api.deps import require_admin, store
from service.api.errors import responses
from service.api.protocol import RefinementReview
from service.errors import APIError
from service.store import Store

router = APIRouter(prefix="/admin/refinements", responses=responses(400, 401))


def item(row: dict) -> dict:
    """A stored refinement as the API shows it: the request is the last user turn our answer answers."""
    request = next((m.get("content") for m in reversed(row.get("messages") or []) if m.get("role") == "user"), None)
    return {"id": row["id"], "created": row["created"], "completion_id": row["completion_id"], "request": request,
            "response": row["response"], "complaint": row["complaint"], "source": row["source"],
            "candidate": row["candidate"], "verified": bool(row["verified"]), "method": row["method"],
            "detail": row["detail"], "status": row["status"], "edited_by": row["edited_by"],
            "distilled_version": row["distilled_version"], "adapter_version": row["adapter_version"]}


@router.get("")
async def list_refinements(status: Literal["proposed", "unverified", "accepted", "rejected"] | None = None,
                           limit: int = Query(100, ge=1, le=1000),
                           db: Store = Depends(store), _: str = Depends(require_admin)):
    """Refinements, newest first: `proposed` (verified, waiting for a verdict), `unverified` (its
    check failed; acceptable only with the operator's own answer), `accepted`, `rejected`."""
    return {"object": "list", "data": [item(r) for r in await run_in_threadpool(db.refinements.list, status, limit)]}


@router.put("/{refinement_id}", responses=responses(404))
async def review_refinement(refinement_id: str, body: RefinementReview, db: Store = Depends(store),
                            actor: str = Depends(require_admin)):
    """Accept (optionally with an edited `candidate`) or reject refinement `refinement_id`; the verdict is audited."""
    try:
        row = await run_in_threadpool(db.refinements.review, refinement_id, body.status, body.actor or actor,
                                      body.reason, body.candidate)
    except ValueError as exc:
        raise APIError(400, str(exc), "candidate", "invalid_value") from None
    if row is None:
        raise APIError(404, f"no refinement with id '{refinement_id}'", "refinement_id", "not_found")
    return item(row)

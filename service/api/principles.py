"""Operator routes for principles (admin key): the review queue, edits, approval, rejection,
merging, and the audit log. Thin: every rule is service.learn.review.PrincipleBook's."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service.api.deps import book, require_admin
from service.api.errors import responses
from service.api.protocol import Approve, Merge, PrincipleCreate, PrincipleEdit, Reject
from service.errors import APIError
from service.learn.review import PrincipleBook, ReviewError

router = APIRouter(prefix="/admin", responses=responses(400, 401))


async def call(fn, *args, **kwargs):
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except ReviewError as exc:
        raise APIError(exc.status, str(exc), exc.param, "not_found" if exc.status == 404 else "invalid_value") from exc


@router.get("/principles")
async def list_principles(
    status: Literal["candidate", "approved", "rejected", "merged"] | None = None,
    min_support: int | None = Query(None, ge=1, le=1_000_000),
    min_agreement: float | None = Query(None, ge=0, le=1),
    limit: int = Query(200, ge=1, le=1000),
    b: PrincipleBook = Depends(book), _: str = Depends(require_admin),
):
    return {"object": "list", "data": await call(b.list, status, min_support, min_agreement, limit)}


@router.post("/principles", status_code=201)
async def write_principle(body: PrincipleCreate, b: PrincipleBook = Depends(book), actor: str = Depends(require_admin)):
    """A principle the operator writes; it is a candidate until approved."""
    return JSONResponse(await call(b.write_new, body.model_dump(), actor), status_code=201)


@router.get("/scope-preview", responses=responses(503))
async def scope_preview(request: Request, domain: str = Query(min_length=1, max_length=500),
                        limit: int = Query(20, ge=1, le=200), _: str = Depends(require_admin)):
    """The latest logged requests a principle of `domain` would apply to, and the closest it would not."""
    scope = getattr(request.app.state, "scope", None)
    if scope is None:
        raise APIError(503, "the model is still loading", None, "model_loading")
    return await run_in_threadpool(scope.preview, domain, limit)


@router.get("/principles/{principle_id}", responses=responses(404))
async def show_principle(principle_id: str, b: PrincipleBook = Depends(book), _: str = Depends(require_admin)):
    p = await call(b.get, principle_id)
    return {**p, "evidence_detail": await call(b.evidence, p), "audit": await call(b.audit, principle_id)}


@router.patch("/principles/{principle_id}", responses=responses(404))
async def edit_principle(principle_id: str, body: PrincipleEdit, b: PrincipleBook = Depends(book),
                         actor: str = Depends(require_admin)):
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise APIError(400, "nothing to change", None, "invalid_value")
    return await call(b.update, principle_id, changes, actor)


@router.post("/principles/{principle_id}/approve", responses=responses(404, 409))
async def approve_principle(principle_id: str, body: Approve | None = None, b: PrincipleBook = Depends(book),
                            actor: str = Depends(require_admin)):
    return await call(b.approve, principle_id, actor, body.mode if body else None)


@router.post("/principles/{principle_id}/reject", responses=responses(404))
async def reject_principle(principle_id: str, body: Reject, b: PrincipleBook = Depends(book),
                           actor: str = Depends(require_admin)):
    return await call(b.reject, principle_id, actor, body.reason)


@router.post("/principles/{principle_id}/merge", responses=responses(404, 409))
async def merge_principle(principle_id: str, body: Merge, b: PrincipleBook = Depends(book),
                          actor: str = Depends(require_admin)):
    return await call(b.merge, principle_id, body.into, actor)


@router.get("/audit")
async def audit_log(object_id: str | None = None, limit: int = Query(200, ge=1, le=1000),
                    b: PrincipleBook = Depends(book), _: str = Depends(require_admin)):
    return {"object": "list", "data": await call(b.audit, object_id, limit)}

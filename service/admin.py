"""Operator endpoints (admin key): principles under review, the audit log, conversations."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from service.auth import require_admin
from service.errors import APIError
from service.review import PrincipleBook, ReviewError

router = APIRouter(prefix="/admin")


class PrincipleEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, min_length=1, max_length=500)
    domain: str | None = Field(None, min_length=1, max_length=500)
    effect: str | None = Field(None, min_length=1, max_length=500)
    checks: list[str] | None = None
    mode: Literal["prompt", "adapter", "both"] | None = None


class Approve(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["prompt", "adapter", "both"] | None = None


class Reject(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=1000)


class Merge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    into: str = Field(min_length=1)


def book(request: Request) -> PrincipleBook:
    return PrincipleBook(request.app.state.store)


async def call(fn, *args, **kwargs):
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except ReviewError as exc:
        raise APIError(exc.status, str(exc), exc.param, "not_found" if exc.status == 404 else "invalid_value") from exc


@router.get("/principles")
async def list_principles(
    status: Literal["candidate", "approved", "rejected", "merged"] | None = None,
    min_support: int | None = Query(None, ge=1),
    min_agreement: float | None = Query(None, ge=0, le=1),
    limit: int = Query(200, ge=1, le=1000),
    b: PrincipleBook = Depends(book), _: str = Depends(require_admin),
):
    return {"object": "list", "data": await call(b.list, status, min_support, min_agreement, limit)}


@router.get("/principles/{principle_id}")
async def show_principle(principle_id: str, b: PrincipleBook = Depends(book), _: str = Depends(require_admin)):
    p = await call(b.get, principle_id)
    return {**p, "evidence_detail": await call(b.evidence, p), "audit": await call(b.audit, principle_id)}


@router.patch("/principles/{principle_id}")
async def edit_principle(principle_id: str, body: PrincipleEdit, b: PrincipleBook = Depends(book),
                         actor: str = Depends(require_admin)):
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise APIError(400, "nothing to change", None, "invalid_value")
    return await call(b.update, principle_id, changes, actor)


@router.post("/principles/{principle_id}/approve")
async def approve_principle(principle_id: str, body: Approve | None = None, b: PrincipleBook = Depends(book),
                            actor: str = Depends(require_admin)):
    return await call(b.approve, principle_id, actor, body.mode if body else None)


@router.post("/principles/{principle_id}/reject")
async def reject_principle(principle_id: str, body: Reject, b: PrincipleBook = Depends(book),
                           actor: str = Depends(require_admin)):
    return await call(b.reject, principle_id, actor, body.reason)


@router.post("/principles/{principle_id}/merge")
async def merge_principle(principle_id: str, body: Merge, b: PrincipleBook = Depends(book),
                          actor: str = Depends(require_admin)):
    return await call(b.merge, principle_id, body.into, actor)


@router.get("/audit")
async def audit_log(object_id: str | None = None, limit: int = Query(200, ge=1, le=1000),
                    b: PrincipleBook = Depends(book), _: str = Depends(require_admin)):
    return {"object": "list", "data": await call(b.audit, object_id, limit)}


@router.get("/conversations/{conversation_id}")
async def conversation(conversation_id: str, request: Request, _: str = Depends(require_admin)):
    store = request.app.state.store

    def load():
        turns = store.completions(conversation_id)
        natural = list(store.db.query(
            "SELECT * FROM natural_feedback WHERE conversation_id = ? ORDER BY created", [conversation_id]))
        feedback = store.list_feedback(conversation_id=conversation_id, limit=1000)
        return turns, natural, feedback

    turns, natural, feedback = await run_in_threadpool(load)
    if not turns:
        raise APIError(404, f"no conversation with id '{conversation_id}'", "conversation_id", "not_found")
    return {"id": conversation_id, "completions": turns, "natural_feedback": natural, "feedback": feedback}


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    principle_ids: list[str] | None = Field(None, description="Default: every approved adapter-mode principle not yet distilled.")
    params: dict | None = Field(None, description='Overrides: {"synthesis": {...}, "train": {...}, "gate": {...}}.')


@router.get("/jobs")
async def list_jobs(request: Request, status: Literal["queued", "running", "succeeded", "failed"] | None = None,
                    limit: int = Query(100, ge=1, le=1000), _: str = Depends(require_admin)):
    from service.jobs import JobQueue

    return {"object": "list", "data": await run_in_threadpool(JobQueue(request.app.state.store).list, status, limit)}


@router.get("/jobs/{job_id}")
async def show_job(job_id: str, request: Request, _: str = Depends(require_admin)):
    from service.jobs import JobQueue

    job = await run_in_threadpool(JobQueue(request.app.state.store).get, job_id)
    if job is None:
        raise APIError(404, f"no job with id '{job_id}'", "job_id", "not_found")
    return job


@router.post("/jobs", status_code=202)
async def start_job(request: Request, body: JobRequest | None = None, actor: str = Depends(require_admin)):
    """Queue a refinement job; the server starts a worker process for it."""
    from service.jobs import JobQueue

    from service.refine import check_params

    store = request.app.state.store
    ids = body.principle_ids if body else None
    try:
        params = check_params(body.params if body else None)
    except ValueError as e:
        raise APIError(400, str(e), "params", "invalid_value") from None
    if ids:
        book = PrincipleBook(store)
        for pid in ids:
            p = await call(book.get, pid)
            if p["status"] != "approved" or p["mode"] not in ("adapter", "both"):
                raise APIError(400, f"principle {pid} is {p['status']} with mode {p['mode']}; only approved "
                               "adapter-mode principles are distilled", "principle_ids", "invalid_value")
    job = await run_in_threadpool(JobQueue(store).enqueue, ids, actor, params)
    scheduler = getattr(request.app.state, "scheduler", None)
    if scheduler is not None:
        await run_in_threadpool(scheduler.tick)
    return job


@router.post("/analyse")
async def analyse_now(request: Request, _: str = Depends(require_admin)):
    """Run one analysis pass now (natural feedback, follow-up likelihood, proposals, votes)."""
    analyst = request.app.state.analyst
    if analyst is None:
        raise APIError(503, "the model is still loading", None, "model_loading")
    return await run_in_threadpool(analyst.run_once)

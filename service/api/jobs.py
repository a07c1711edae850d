"""Operator routes for the learning side (admin key): refinement jobs, and a background-analysis
pass on demand."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from service.api.deps import analyst, require_admin, store
from service.api.errors import responses
from service.api.protocol import JobRequest
from service.distill.recipe import check_params
from service.errors import APIError
from service.learn.analyst import Analyst
from service.store import Store

router = APIRouter(prefix="/admin", responses=responses(400, 401))


@router.get("/jobs")
async def list_jobs(status: Literal["queued", "running", "succeeded", "failed"] | None = None,
                    limit: int = Query(100, ge=1, le=1000), db: Store = Depends(store), _: str = Depends(require_admin)):
    return {"object": "list", "data": await run_in_threadpool(db.jobs.list, status, limit)}


@router.get("/jobs/{job_id}", responses=responses(404))
async def show_job(job_id: str, db: Store = Depends(store), _: str = Depends(require_admin)):
    job = await run_in_threadpool(db.jobs.get, job_id)
    if job is None:
        raise APIError(404, f"no job with id '{job_id}'", "job_id", "not_found")
    return job


@router.post("/jobs", status_code=202, responses=responses(404))
async def start_job(request: Request, body: JobRequest | None = None, db: Store = Depends(store),
                    actor: str = Depends(require_admin)):
    """Queue a refinement job; the server starts a worker process for it."""
    ids = body.principle_ids if body else None
    try:
        params = check_params(body.params if body else None)
    except ValueError as e:
        raise APIError(400, str(e), "params", "invalid_value") from None
    for pid in ids or []:
        p = await run_in_threadpool(db.principles.get, pid)
        if p is None:
            raise APIError(404, f"no principle with id '{pid}'", "principle_ids", "not_found")
        if p["status"] != "approved" or p["mode"] not in ("adapter", "both"):
            raise APIError(400, f"principle {pid} is {p['status']} with mode {p['mode']}; only approved "
                           "adapter-mode principles are distilled", "principle_ids", "invalid_value")
    job = await run_in_threadpool(db.jobs.enqueue, ids, actor, params)
    scheduler = getattr(request.app.state, "scheduler", None)
    if scheduler is not None:
        await run_in_threadpool(scheduler.tick)
    return job


@router.post("/analyse", responses=responses(503))
async def analyse_now(a: Analyst = Depends(analyst), _: str = Depends(require_admin)):
    """Run one analysis pass now (natural feedback, follow-up likelihood, proposals, votes)."""
    return await run_in_threadpool(a.run_once)

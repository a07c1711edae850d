"""Operator routes for natural feedback (admin key): the verdicts on follow-up turns, and an
operator's label of a turn, which the classifier learns from (service.learn.natural)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from service.api.deps import require_admin, store
from service.api.errors import responses
from service.api.protocol import NaturalLabel
from service.learn.natural import relabel
from service.store import Store

router = APIRouter(prefix="/admin/natural-feedback", responses=responses(400, 401))

Category = Literal["repeat_rephrase", "aware_with_correction", "aware_without_correction", "clarification",
                   "positive", "none"]


@router.get("")
async def list_verdicts(category: Category | None = None, limit: int = Query(100, ge=1, le=1000),
                        db: Store = Depends(store), _: str = Depends(require_admin)):
    return {"object": "list", "data": await run_in_threadpool(db.natural.list, category, limit)}


@router.put("/{follow_up_id}", responses=responses(404))
async def label_turn(follow_up_id: str, body: NaturalLabel, db: Store = Depends(store),
                     actor: str = Depends(require_admin)):
    """Label the user turn that request `follow_up_id` opens with; the stored verdict follows."""
    return await run_in_threadpool(relabel, db, follow_up_id, body.category, body.polarity, body.principle, actor)

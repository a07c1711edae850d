"""Operator route for one conversation (admin key): its exchanges with natural and explicit feedback."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from service.api.deps import require_admin, store
from service.api.errors import responses
from service.errors import APIError
from service.store import Store

router = APIRouter(prefix="/admin/conversations", responses=responses(401))


@router.get("/{conversation_id}", responses=responses(404))
async def conversation(conversation_id: str, db: Store = Depends(store), _: str = Depends(require_admin)):
    def load():
        return (db.exchanges.in_conversation(conversation_id), db.natural.in_conversation(conversation_id),
                db.feedback.list(conversation_id=conversation_id, limit=1000))

    turns, natural, feedback = await run_in_threadpool(load)
    if not turns:
        raise APIError(404, f"no conversation with id '{conversation_id}'", "conversation_id", "not_found")
    return {"id": conversation_id, "completions": turns, "natural_feedback": natural, "feedback": feedback}

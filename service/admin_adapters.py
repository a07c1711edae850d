"""Operator endpoints for adapter versions: register, promote, canary, rollback, retire."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from adapters.registry import AdapterRejected, InvalidTransition, NotFound, RegistryError
from service.auth import require_admin
from service.errors import APIError
from service.outcomes import outcomes

router = APIRouter(prefix="/admin/adapters")


class RegisterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1)
    name: str = Field(min_length=1, max_length=64)
    principles: list[str] = []
    notes: str | None = None


class CanaryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    share: float = Field(gt=0, lt=1)


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=1000)


def _lifecycle(request: Request):
    lc = getattr(request.app.state, "lifecycle", None)
    if lc is None:
        raise APIError(503, "the model is still loading", None, "model_loading")
    return lc


async def _call(fn, *args, **kwargs):
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except NotFound as exc:
        raise APIError(404, str(exc), "version", "adapter_not_found") from exc
    except InvalidTransition as exc:
        raise APIError(409, str(exc), "version", "invalid_transition") from exc
    except AdapterRejected as exc:
        raise APIError(400, str(exc), "path", "adapter_rejected") from exc
    except RegistryError as exc:
        raise APIError(400, str(exc), None, "invalid_value") from exc


@router.get("")
async def list_adapters(request: Request, name: str | None = None, _: str = Depends(require_admin)):
    lc = _lifecycle(request)

    def load():
        stats = outcomes(request.app.state.store)
        rows = []
        for v in lc.registry.list(name):
            d = v.to_dict()
            rows.append({"id": v.version_id, "object": "adapter", **d, "share": v.canary_share,
                         "outcomes": stats.get(v.version_id, {"requests": 0}),
                         "loaded": v.version_id in lc.engine.adapters,
                         "load_error": lc.router.load_errors.get(v.version_id)})
        return {"object": "list", "data": rows, "serving": lc.router.serving(),
                "base": {"id": lc.engine.model_id, "outcomes": stats.get("base", {"requests": 0})}}

    return await run_in_threadpool(load)


@router.get("/audit")
async def adapter_audit(request: Request, limit: int = Query(200, ge=1, le=5000), _: str = Depends(require_admin)):
    return {"object": "list", "data": await _call(_lifecycle(request).registry.audit, limit)}


@router.post("")
async def register_adapter(body: RegisterBody, request: Request, actor: str = Depends(require_admin)):
    lc = _lifecycle(request)
    if not Path(body.path).is_dir():
        raise APIError(400, f"no adapter directory at {body.path}", "path", "invalid_value")
    vid = await _call(lc.registry.register, body.path, body.name, principles=body.principles,
                      notes=body.notes, actor=actor)
    return {"id": vid, "object": "adapter", **lc.registry.show(vid).to_dict()}


@router.post("/{version_id}/promote")
async def promote(version_id: str, request: Request, body: Reason | None = None, actor: str = Depends(require_admin)):
    lc = _lifecycle(request)
    return await _call(lc.promote, version_id, actor, body.reason if body else None)


@router.post("/{version_id}/canary")
async def canary(version_id: str, body: CanaryBody, request: Request, actor: str = Depends(require_admin)):
    lc = _lifecycle(request)
    return await _call(lc.canary, version_id, body.share, actor)


@router.post("/{name}/rollback")
async def rollback(name: str, request: Request, body: Reason | None = None, actor: str = Depends(require_admin)):
    lc = _lifecycle(request)
    return await _call(lc.rollback, name, actor, body.reason if body else None)


@router.post("/{version_id}/retire")
async def retire(version_id: str, request: Request, body: Reason | None = None, actor: str = Depends(require_admin)):
    lc = _lifecycle(request)
    return await _call(lc.retire, version_id, actor, body.reason if body else None)

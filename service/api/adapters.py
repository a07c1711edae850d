"""Operator routes for adapter versions (admin key): register, promote, canary, rollback, retire,
and the registry's audit log. Every change goes through the rollout (service.rollout.lifecycle).
The list shows each version's outcomes (service.store.outcomes: thumbs, negative, correction and
natural-dissatisfaction rates, answer length) and, for a canary, the canary rule's verdict now with
its per-metric breakdown, so an operator sees why a canary would be rolled back."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from adapters.registry import AdapterRejected, InvalidTransition, NotFound, RegistryError
from service.api.deps import require_admin, rollout
from service.api.errors import responses
from service.api.protocol import CanaryShare, Reason, RegisterAdapter
from service.errors import APIError
from service.rollout.server import ServerRollout
from service.serving.engines.base import EngineFull

router = APIRouter(prefix="/admin/adapters", responses=responses(400, 401, 503))


async def _call(fn, *args, **kwargs):
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except NotFound as exc:
        raise APIError(404, str(exc), "version", "adapter_not_found") from exc
    except InvalidTransition as exc:
        raise APIError(409, str(exc), "version", "invalid_transition") from exc
    except AdapterRejected as exc:
        raise APIError(400, str(exc), "path", "adapter_rejected") from exc
    except EngineFull as exc:
        raise APIError(409, str(exc), "version", "engine_full") from exc
    except RegistryError as exc:
        raise APIError(400, str(exc), None, "invalid_value") from exc


@router.get("")
async def list_adapters(name: str | None = None, r: ServerRollout = Depends(rollout), _: str = Depends(require_admin)):
    def load():
        stats, verdicts = r.store.outcomes.per_version(), r.canary_verdicts()
        rows = []
        for v in r.registry.list(name):
            rows.append({"id": v.version_id, "object": "adapter", **v.to_dict(), "share": v.canary_share,
                         "outcomes": stats.get(v.version_id, {"requests": 0}),
                         "canary_check": verdicts.get(v.version_id),
                         "loaded": v.version_id in r.engine.adapters,
                         "load_error": r.router.load_errors.get(v.version_id)})
        return {"object": "list", "data": rows, "serving": r.router.serving(),
                "base": {"id": r.engine.model_id, "outcomes": stats.get("base", {"requests": 0})}}

    return await run_in_threadpool(load)


@router.get("/audit")
async def adapter_audit(limit: int = Query(200, ge=1, le=5000), r: ServerRollout = Depends(rollout),
                        _: str = Depends(require_admin)):
    return {"object": "list", "data": await _call(r.registry.audit, limit)}


@router.post("")
async def register_adapter(body: RegisterAdapter, r: ServerRollout = Depends(rollout), actor: str = Depends(require_admin)):
    if not Path(body.path).is_dir():
        raise APIError(400, f"no adapter directory at {body.path}", "path", "invalid_value")
    vid = await _call(r.registry.register, body.path, body.name, principles=body.principles, notes=body.notes, actor=actor)
    return {"id": vid, "object": "adapter", **r.registry.show(vid).to_dict()}


@router.post("/{version_id}/promote", responses=responses(404, 409))
async def promote(version_id: str, body: Reason | None = None, r: ServerRollout = Depends(rollout),
                  actor: str = Depends(require_admin)):
    changes = await _call(r.lifecycle.promote, version_id, actor, body.reason if body else None)
    return r.result(version_id, changes)


@router.post("/{version_id}/canary", responses=responses(404, 409))
async def canary(version_id: str, body: CanaryShare, r: ServerRollout = Depends(rollout),
                 actor: str = Depends(require_admin)):
    changes = await _call(r.lifecycle.canary, version_id, body.share, actor)
    return r.result(version_id, changes)


@router.post("/{name}/rollback", responses=responses(404, 409))
async def rollback(name: str, body: Reason | None = None, r: ServerRollout = Depends(rollout),
                   actor: str = Depends(require_admin)):
    changes = await _call(r.lifecycle.rollback, name, actor, body.reason if body else None)
    return r.result(name, changes)


@router.post("/{version_id}/retire", responses=responses(404, 409))
async def retire(version_id: str, body: Reason | None = None, r: ServerRollout = Depends(rollout),
                 actor: str = Depends(require_admin)):
    changes = await _call(r.lifecycle.retire, version_id, actor, body.reason if body else None)
    return r.result(version_id, changes)

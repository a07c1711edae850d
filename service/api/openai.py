"""The OpenAI-compatible routes: `POST /v1/chat/completions` (plain and streaming) and `GET /v1/models`.

Thin: parse, call service.serving.chat.ChatService, serialise.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response, StreamingResponse

from service.api.deps import chat_service, require_key
from service.api.errors import responses
from service.api.protocol import ChatCompletionRequest
from service.serving.chat import ChatService

router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)], responses=responses(400, 401, 503))


@router.get("/models")
async def list_models(chat: ChatService = Depends(chat_service)):
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": "refinery"} for name in chat.model_names()
    ]}


@router.post("/chat/completions", responses=responses(404))
async def chat_completions(req: ChatCompletionRequest, request: Request, chat: ChatService = Depends(chat_service),
                           x_conversation_id: str | None = Header(None)):
    record, job = await chat.prepare(req, x_conversation_id)
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(chat.stream(record, job, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    answer = await chat.complete(record, job, disconnected=request.is_disconnected)
    # None: the client went away and its generation was stopped; nobody reads this reply.
    return answer if answer is not None else Response(status_code=499)

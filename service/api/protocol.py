"""Request and response models of the HTTP API: OpenAI's chat completions and error shapes, and the
bodies of the feedback and operator routes. Each model carries the constraints it enforces, so the
OpenAPI document says what a route accepts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MODES = ("prompt", "adapter", "both")
Mode = Literal["prompt", "adapter", "both"]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body; every 4xx and 5xx of this API has it."""

    error: ErrorDetail


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _content(cls, v):
        if isinstance(v, dict) and v.get("content") is None:
            raise ValueError("content is required (tool calls are not supported)")
        return v

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)

    def plain(self) -> dict:
        # "developer" is OpenAI's newer name for the system role.
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": self.text()}


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """Fields we act on; fields we cannot honour are rejected below rather than ignored."""

    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # what torch.Generator takes
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    metadata: dict[str, str] | None = None
    n: int | None = None
    # Accepted because clients send them with neutral values; anything else is a 400.
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict | None = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        if isinstance(v, str):
            v = [v]
        if v is not None:
            if len(v) > 4:
                raise ValueError("at most 4 stop sequences")
            if any(not s for s in v):
                raise ValueError("stop sequences must not be empty")
        return v

    @model_validator(mode="after")
    def _unsupported(self):
        problems = {
            "n": self.n not in (None, 1),
            "tools": bool(self.tools),
            "tool_choice": self.tool_choice not in (None, "none"),
            "logprobs": bool(self.logprobs),
            "frequency_penalty": self.frequency_penalty not in (None, 0, 0.0),
            "presence_penalty": self.presence_penalty not in (None, 0, 0.0),
            "response_format": self.response_format not in (None, {"type": "text"}),
        }
        # OpenAI options this server cannot honour, sent as extra fields: refused unless neutral.
        extra = self.model_extra or {}
        neutral = {"logit_bias": ({},), "functions": ([],), "function_call": ("none",), "top_logprobs": (0,),
                   "modalities": (["text"],), "prediction": (), "audio": (), "reasoning_effort": (),
                   "web_search_options": ()}
        for name, ok in neutral.items():
            problems[name] = name in extra and extra[name] is not None and extra[name] not in ok
        for name, bad in problems.items():
            if bad:
                raise UnsupportedParameter(name)
        if self.stream_options is not None and not self.stream:
            raise UnsupportedParameter("stream_options", "stream_options is only allowed when stream is true")
        return self

    @property
    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class UnsupportedParameter(ValueError):
    def __init__(self, param: str, message: str | None = None):
        self.param = param
        super().__init__(message or f"'{param}' is not supported by this server")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    completion_id: str = Field(min_length=1, max_length=128)
    id: str | None = Field(None, min_length=1, max_length=128, description="Client-chosen id: retries with it are idempotent.")
    thumb: Literal["up", "down"] | None = None
    score: int | None = Field(None, ge=1, le=5)
    reason: str | None = Field(None, min_length=1, max_length=64)
    comment: str | None = Field(None, min_length=1)
    correction: str | None = Field(None, min_length=1)
    user: str | None = Field(None, max_length=256)

    @model_validator(mode="after")
    def _something(self):
        if all(getattr(self, f) is None for f in ("thumb", "score", "reason", "comment", "correction")):
            raise ValueError("give at least one of thumb, score, reason, comment, correction")
        return self


# -- operator routes ---------------------------------------------------------------------------

class PrincipleCreate(BaseModel):
    """A principle an operator writes; it starts as a candidate, like a proposed one."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=3, max_length=500, description="The rule, a short imperative.")
    domain: str = Field(min_length=1, max_length=500, description='Where it applies; "all requests" for everywhere.')
    effect: str | None = Field(None, min_length=1, max_length=500, description="What changes in the answer (default: the text).")
    checks: list[str] = Field(default_factory=list, max_length=20, description='Programmatic checks, e.g. starts_with "Note:".')
    mode: Mode = "prompt"


class PrincipleEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, min_length=1, max_length=500)
    domain: str | None = Field(None, min_length=1, max_length=500)
    effect: str | None = Field(None, min_length=1, max_length=500)
    checks: list[str] | None = None
    mode: Mode | None = None


class Approve(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Mode | None = None


class Reject(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=1000)


class Merge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    into: str = Field(min_length=1, max_length=128)


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    principle_ids: list[str] | None = Field(None, description="Default: every approved adapter-mode principle not yet distilled.")
    params: dict | None = Field(None, description='Overrides: {"synthesis": {...}, "train": {...}, "gate": {...}}.')


class RegisterAdapter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=4096)
    name: str = Field(min_length=1, max_length=64)
    principles: list[str] = []
    notes: str | None = Field(None, max_length=4000)


class CanaryShare(BaseModel):
    model_config = ConfigDict(extra="forbid")
    share: float = Field(gt=0, lt=1)


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=1000)


class NaturalLabel(BaseModel):
    """An operator's label of a follow-up turn (what its user turn says about our answer)."""

    model_config = ConfigDict(extra="forbid")
    category: Literal["repeat_rephrase", "aware_with_correction", "aware_without_correction", "clarification",
                      "positive", "none"]
    polarity: Literal["negative", "positive", "neutral"] | None = Field(
        None, description="Default: the category's (clarification: neutral; negative when it doubts the answer).")
    principle: bool = Field(False, description="The turn states a standing rule for future answers.")


class CorrectionReview(BaseModel):
    """An operator's verdict on a user's correction: a rejected one never trains."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["accepted", "rejected"]
    reason: str | None = Field(None, min_length=1, max_length=1000)
    actor: str | None = Field(None, min_length=1, max_length=64,
                              description="Who, for the audit log (default: the operator the admin key acts as).")


class RefinementReview(BaseModel):
    """An operator's verdict on a better answer sampled for a complaint: only an accepted one trains."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["accepted", "rejected"]
    candidate: str | None = Field(None, min_length=1, max_length=20000,
                                  description="The operator's own (or edited) better answer; required to accept an "
                                              "unverified one.")
    reason: str | None = Field(None, min_length=1, max_length=1000)
    actor: str | None = Field(None, min_length=1, max_length=64,
                              description="Who, for the audit log (default: the operator the admin key acts as).")

"""The teacher LLM: one place that builds it, and one way to ask it for structured answers.

Everything in `policies/` that needs an LLM takes a langchain-core `BaseChatModel`. By default
that is the served local model wrapped as a chat model (`LocalChatModel`); an operator can name
any LangChain chat model class instead (e.g. `langchain_openai.ChatOpenAI` with a `base_url`).
Tests pass langchain-core's fake chat models with scripted answers.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)

# A generate function: OpenAI-style messages and a token budget in, answer text out.
GenerateFn = Callable[[list[dict], int], str]


class LocalChatModel(BaseChatModel):
    """Wraps the served model (any `GenerateFn`) as a langchain-core chat model."""

    generate_fn: Any
    max_tokens: int = 256
    model_name: str = "local"

    @property
    def _llm_type(self) -> str:
        return "refinery-local"

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs) -> ChatResult:
        text = self.generate_fn(to_openai_messages(messages), kwargs.get("max_tokens", self.max_tokens))
        if stop:
            for s in stop:
                if s in text:
                    text = text[: text.index(s)]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def to_openai_messages(messages: Sequence[BaseMessage]) -> list[dict]:
    roles = {"human": "user", "ai": "assistant", "system": "system"}
    return [{"role": roles.get(m.type, "user"), "content": m.text if hasattr(m, "text") else str(m.content)} for m in messages]


def build_teacher(
    spec: str | None,
    kwargs: dict | None = None,
    generate_fn: GenerateFn | None = None,
) -> BaseChatModel | None:
    """Build the teacher from settings.

    `spec` is None/"" or "local" for the served model (needs `generate_fn`), "none" for no
    teacher, or a dotted class path such as "langchain_openai.ChatOpenAI" constructed with
    `kwargs` (e.g. {"model": "gpt-4o-mini", "base_url": "http://..."}).
    """
    if spec == "none":
        return None
    if spec in (None, "", "local"):
        if generate_fn is None:
            return None
        return LocalChatModel(generate_fn=generate_fn)
    module_name, _, class_name = spec.rpartition(".")
    if not module_name:
        raise ValueError(f"teacher must be 'local', 'none' or a dotted class path, got {spec!r}")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**(kwargs or {}))


def is_capable(llm: BaseChatModel | None) -> bool:
    """A small local model is not trusted as a judge or a classifier; a named LLM is."""
    return llm is not None and not isinstance(llm, LocalChatModel)


@dataclass
class StructuredFailure(Exception):
    """The LLM never produced an answer that parses; the raw answers are kept for the record."""

    schema: str
    raw: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"no parseable {self.schema} after {len(self.raw)} tries: {self.errors[-1] if self.errors else ''}"


_JSON_BLOCK = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def extract_json(text: str) -> Any:
    """The first JSON object or array in an LLM answer (fenced or bare)."""
    m = _JSON_BLOCK.search(text)
    candidates = [m.group(1)] if m else []
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if starts:
        candidates.append(text[min(starts):])
    decoder = json.JSONDecoder()
    for cand in candidates:
        cand = cand.strip()
        try:
            value, _ = decoder.raw_decode(cand)
            return value
        except json.JSONDecodeError:
            continue
    raise ValueError("no JSON found in the answer")


def ask_structured(
    llm: BaseChatModel,
    messages: Sequence[BaseMessage] | str,
    schema: type[T],
    retries: int = 2,
) -> T:
    """Ask `llm` and parse its answer into `schema`, retrying with the parse error.

    Raises StructuredFailure (with every raw answer) when no try parses: callers record it,
    they never drop it silently.
    """
    if isinstance(messages, str):
        messages = [HumanMessage(content=messages)]
    convo = list(messages)
    failure = StructuredFailure(schema=schema.__name__)
    for _ in range(retries + 1):
        answer = llm.invoke(convo)
        raw = answer.text if hasattr(answer, "text") else str(answer.content)
        failure.raw.append(raw)
        try:
            return schema.model_validate(extract_json(raw))
        except (ValueError, ValidationError) as exc:
            failure.errors.append(str(exc)[:500])
            convo = convo + [
                AIMessage(content=raw),
                HumanMessage(
                    content="That answer could not be parsed: "
                    f"{str(exc)[:300]}\nAnswer again with only a JSON object matching this schema: "
                    f"{json.dumps(schema.model_json_schema())}"
                ),
            ]
    raise failure

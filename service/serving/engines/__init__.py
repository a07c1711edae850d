"""Engines that decode for Refinery: the embedded one (default) or vLLM replicas over HTTP.

`open_engine(settings)` builds the one `REFINERY_ENGINE` names; everything else in the service
talks to service.serving.engines.base.Engine.
"""

from __future__ import annotations

from service.serving.engines.base import Delta, Engine, Event, Failed, Finished, GenJob

__all__ = ["Delta", "Engine", "Event", "Failed", "Finished", "GenJob", "open_engine"]


def open_engine(settings) -> Engine:
    """The configured engine, ready to serve (slow: loads a model, or waits for replicas)."""
    if settings.engine == "vllm":
        from service.serving.engines.vllm import VLLMEngine

        return VLLMEngine.from_settings(settings)
    from adapters.model import load_model
    from adapters.runtime import set_threads
    from service.serving.engines.embedded import EmbeddedEngine

    set_threads(settings.inference_threads)
    lm = load_model(settings.model, settings.model_cache_dir, settings.device)
    return EmbeddedEngine(lm.model, lm.tokenizer, lm.model_id, settings.max_batch_size)

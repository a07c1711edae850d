"""Settings from the environment (`REFINERY_*`) and a `.env` file, through pydantic-settings.

The one place that derives what several parts need: the model cache directory, the number of
inference threads, and the teacher LLM (the server, the refinement job and `refinery mine`
build it from here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.runtime import default_threads


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REFINERY_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Where the database, model cache and adapters live.")
    host: str = Field("127.0.0.1", description="Address `refinery serve` binds to.")
    port: int = Field(8000, description="Port `refinery serve` listens on.")
    model: str | None = Field(None, description="Base model: a local directory or hub id; unset = the embedded SmolLM2-135M-Instruct.")
    model_cache: Path | None = Field(None, description="Where converted weights are cached; default <data_dir>/models.")
    device: str = Field("auto", description="auto (CUDA when present), cpu or cuda.")

    engine: Literal["embedded", "vllm"] = Field("embedded", description="What decodes: the embedded engine in this process, or vLLM replicas over HTTP (REFINERY_ENGINE_URLS).")
    engine_urls: str = Field("", description="Comma-separated base URLs of the vLLM replicas (e.g. http://10.0.0.5:8000), for engine=vllm.")
    engine_adapter_dir: Path | None = Field(None, description="The registry's adapter directory as the engines see it (a shared volume); unset = the same path as here.")
    engine_max_lora_rank: int = Field(16, description="The replicas' --max-lora-rank: adapters of a higher rank are refused at registration.")
    engine_max_loras: int = Field(2, description="Adapter versions loaded at once on a replica (its --max-cpu-loras, or --max-loras when that is unset).")
    engine_timeout_s: float = Field(600.0, description="Longest a request to a replica may take.")
    engine_health_s: float = Field(2.0, description="How often each replica's /health is checked.")

    # A comma-separated list is friendlier in an env file than JSON.
    api_keys: str = Field("", description="Comma-separated API keys for /v1/*; empty = no key needed.")
    admin_key: str = Field("", description="Key for operator endpoints (/admin/*); empty = they are closed.")

    max_body_bytes: int = Field(1_000_000, description="Largest accepted request body.")
    max_messages: int = Field(200, description="Most messages in one chat request.")
    max_message_chars: int = Field(32_000, description="Longest single message.")
    max_tokens_limit: int = Field(1024, description="Largest max_tokens a request may ask for.")
    default_max_tokens: int = Field(256, description="max_tokens when a request gives none.")
    max_context_tokens: int = Field(2048, description="Prompt plus answer must fit in this many tokens.")
    max_comment_chars: int = Field(4000, description="Longest feedback comment.")
    max_correction_chars: int = Field(16_000, description="Longest corrected answer in feedback.")
    default_temperature: float = Field(0.3, description="Sampling temperature when a request gives none (0 = greedy).")
    torch_threads: int = Field(0, description="Intra-op threads for inference; 0 = cores - 1 (at least 1, at most 8), leaving a core for the event loop and background work.")
    max_batch_size: int = Field(8, description="Most requests decoded together in one batch.")

    default_adapter: str = Field("refinery", description="Adapter name served for model 'refinery' or no model; its active version answers.")
    registry_poll_s: float = Field(0.5, description="How often the server looks for registry changes made elsewhere (CLI).")
    canary_check_s: float = Field(10.0, description="How often canaries are judged against the active version.")
    canary_min_samples: int = Field(30, ge=1, description="Requests needed on each side before a canary can be rolled back.")
    canary_alpha: float = Field(0.05, description="Significance level of the canary's two-proportion test.")
    canary_auto_promote_s: float = Field(0.0, description="Promote a canary that stayed clean this long (0 = never automatically).")

    encoder: str | None = Field(None, description="Sentence encoder: a local sentence-transformers directory; unset = the embedded all-MiniLM-L6-v2.")
    scope_matcher: Literal["encoder", "lexical"] = Field("encoder", description="Which requests an in-context principle covers: its scope model on the sentence encoder, or word overlap with its domain.")
    adapter_scope: bool = Field(True, description="Answer a request with a version's adapter only if it is within the version's scope (scope.json: the requests its corrections, complaints and thumbs came from, by encoder cosine, and its principles' domains, by their scope models); else with the base weights. Off: the adapter answers every request.")
    natural_detector: Literal["encoder", "rules"] = Field("encoder", description="Natural feedback without a capable teacher: the classifier on encoder features (refitted with operators' labels), or the phrase rules alone.")
    teacher: str = Field("local", description="Teacher LLM: 'local' (the served model; rules decide where it is too weak), 'none', or a LangChain chat model class such as 'langchain_openai.ChatOpenAI'.")
    teacher_args: str = Field("", description='JSON keyword arguments for the teacher class, e.g. {"model": "gpt-4o-mini", "base_url": "http://..."}.')
    background_analysis: bool = Field(True, description="Analyse new exchanges and feedback in a background thread (POST /admin/analyse runs a pass on demand either way).")
    analysis_interval_s: float = Field(5.0, description="How often the background analysis looks for new exchanges and feedback.")
    refine_complaints: bool = Field(True, description="The background analysis samples a better answer for each complaint without a correction (a thumbs-down with a comment, a natural complaint) and verifies it, for operators to review (DRIFT).")
    complaint_max_tokens: int = Field(256, description="Longest better answer sampled for a complaint.")
    run_jobs: bool = Field(True, description="The server starts a refinement worker process when jobs are queued.")
    promotion: Literal["manual", "auto-canary", "auto-promote"] = Field("manual", description="What the refinement job does with a candidate that passes its gate: manual, auto-canary or auto-promote.")
    auto_canary_share: float = Field(0.1, description="Traffic share of an automatic canary.")

    @property
    def db_path(self) -> Path:
        return self.data_dir / "refinery.db"

    @property
    def model_cache_dir(self) -> Path:
        return self.model_cache or self.data_dir / "models"

    @property
    def engine_url_list(self) -> list[str]:
        return [u.strip().rstrip("/") for u in self.engine_urls.split(",") if u.strip()]

    @property
    def api_key_set(self) -> set[str]:
        return {k.strip() for k in self.api_keys.split(",") if k.strip()}

    @property
    def inference_threads(self) -> int:
        """`torch_threads`, or cores - 1 when it is 0 (adapters.runtime.default_threads)."""
        return default_threads(self.torch_threads)

    @property
    def teacher_kwargs(self) -> dict:
        return json.loads(self.teacher_args) if self.teacher_args else {}

    def build_teacher(self, generate_fn=None):
        """The configured teacher (None for 'none'); 'local' wraps `generate_fn`, the served model
        (policies.teacher.GenerateFn)."""
        # Imported here: langchain-core takes most of a second to import, and the CLI's registry
        # and review commands never build a teacher.
        from policies.teacher import build_teacher

        return build_teacher(self.teacher, self.teacher_kwargs, generate_fn=generate_fn)

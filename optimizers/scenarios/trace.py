"""The serving scenario's request trace: seeded, so two runs — and both sides of every ratio —
serve the same requests. Kept apart from the engines (no torch import) because playbooks
validate a ``trace:`` block with ``TraceConfig``."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TraceConfig(BaseModel):
    """The request trace of a serving run (a playbook's ``trace:``); seeded, so two runs and
    both sides of every ratio serve the same requests."""

    model_config = ConfigDict(extra="forbid")
    requests: int = Field(16, ge=1, le=4096, description="requests in the trace")
    max_concurrency: int = Field(16, ge=1, le=1024, description="requests the server admits at once; the rest queue")
    prompt_tokens: tuple[int, int] = Field((64, 192), description="prompt length, uniform in [min, max] tokens "
                                                                  "(shared prefix included)")
    output_tokens: tuple[int, int] = Field((24, 48), description="output length, uniform in [min, max] tokens")
    shared_prefix_tokens: int = Field(0, ge=0, le=32768, description="a system prompt every request starts with")
    arrival: Literal["all_at_once", "poisson"] = Field("all_at_once", description="all at t=0, or a Poisson process")
    rate_per_s: float = Field(4.0, gt=0, le=10_000, description="mean arrivals per second (poisson only)")
    seed: int = Field(0, ge=0, description="seeds lengths, prompt offsets and arrivals")

    @model_validator(mode="after")
    def _ranges(self) -> "TraceConfig":
        for name in ("prompt_tokens", "output_tokens"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name}=({lo}, {hi}) must satisfy 1 ≤ min ≤ max")
        if self.shared_prefix_tokens >= self.prompt_tokens[0]:
            raise ValueError(f"shared_prefix_tokens={self.shared_prefix_tokens} must be below prompt_tokens min "
                             f"{self.prompt_tokens[0]}: each request needs tokens of its own after the prefix")
        return self


@dataclass(frozen=True)
class Request:
    index: int
    prompt: list[int]
    output_tokens: int
    arrival_s: float  # seconds after the trace starts


def make_trace(token_ids: Any, cfg: TraceConfig) -> list[Request]:
    """Requests from a held-out token stream: the shared prefix is the stream's first tokens,
    each request's own part starts at a seeded offset after it; deterministic in ``cfg``."""
    rng = random.Random(cfg.seed)
    ids = token_ids.tolist() if hasattr(token_ids, "tolist") else list(token_ids)
    prefix = ids[: cfg.shared_prefix_tokens]
    pool = ids[cfg.shared_prefix_tokens:]
    longest = cfg.prompt_tokens[1] - cfg.shared_prefix_tokens
    if len(pool) <= longest:
        raise ValueError(f"the held-out stream has {len(ids)} tokens, too few for prompts of {cfg.prompt_tokens[1]} "
                         f"tokens after a {cfg.shared_prefix_tokens}-token prefix; lower trace.prompt_tokens")
    out, t = [], 0.0
    for i in range(cfg.requests):
        n_prompt = rng.randint(*cfg.prompt_tokens) - cfg.shared_prefix_tokens
        start = rng.randrange(0, len(pool) - n_prompt)
        n_out = rng.randint(*cfg.output_tokens)
        if cfg.arrival == "poisson" and i > 0:
            t += rng.expovariate(cfg.rate_per_s)
        out.append(Request(i, prefix + pool[start : start + n_prompt], n_out, t))
    return out

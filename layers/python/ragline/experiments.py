"""A/B experiments: sticky assignment of a user to a variant and the overrides that variant
applies to one ``ask``.

Assignment hashes ``experiment name + user id`` (SHA-256, first 8 bytes as a fraction in
[0, 1)) and walks the variants' cumulative traffic shares, so a user keeps their variant for
as long as the experiment's configuration is unchanged, different experiments split traffic
independently, and no assignment table has to be stored. Several experiments may run at once;
their overrides apply in configuration order (a later one wins on the same knob).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from .generation.prompt import SYSTEM
from .settings import ExperimentSettings, VariantSettings

SYSTEM_PROMPTS: dict[str, str] = {
    "default": SYSTEM,
    "concise": SYSTEM + " Answer in at most two sentences.",
    "stepwise": SYSTEM + " First list the relevant facts with their citations, then give the answer.",
}

_KNOBS = ("top_k", "dense_weight", "rerank", "model_tier", "prompt", "index_version")


def bucket(experiment: str, user: str) -> float:
    """The user's position in [0, 1) for one experiment."""
    digest = hashlib.sha256(f"{experiment}\x00{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(experiment: ExperimentSettings, user: str) -> VariantSettings:
    x = bucket(experiment.name, user)
    acc = 0.0
    for v in experiment.variants:
        acc += v.share
        if x < acc:
            return v
    return experiment.variants[-1]  # shares sum to 1 within float error


@dataclass(slots=True)
class Assignment:
    """What the experiments decided for one request."""

    variants: dict[str, str] = field(default_factory=dict)  # experiment -> variant
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str | None:
        return ",".join(f"{e}/{v}" for e, v in self.variants.items()) or None

    def system_prompt(self) -> str:
        return SYSTEM_PROMPTS[self.overrides.get("prompt") or "default"]


def resolve(experiments: list[ExperimentSettings], user: str) -> Assignment:
    out = Assignment()
    for exp in experiments:
        if not exp.enabled:
            continue
        v = assign(exp, user)
        out.variants[exp.name] = v.name
        for knob in _KNOBS:
            value = getattr(v, knob)
            if value is not None:
                out.overrides[knob] = value
    return out

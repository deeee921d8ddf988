"""Prices and metering.

The price table is a versioned JSON file (``ragline/data/prices/<name>.json``, or a path),
selected by ``Settings.costs.price_table``: per model, USD per 1,000 input and output tokens,
plus an optional per-call price (rerank is billed per query). Every :class:`~ragline.models.Usage`
is priced here; a model missing from the table is priced at zero and the usage says so in
``price_version`` ("<version>:unpriced") so an operator sees the gap instead of a silent zero.

The same model called through Bedrock batch inference (index builds) is billed at the batch
rate: its usage carries the model id ``<model>@batch`` (:func:`batch_model_id`), priced by that
entry of the table, so the ledger shows batch spend apart from on-demand spend.

Costs are computed in integer nano-dollars (the ledger's unit on both backends) and exposed as
float USD, so the ledger's sums are exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..models import Usage
from ..tokens import count_tokens

NANOS = 1_000_000_000
BATCH_SUFFIX = "@batch"
_PRICES_DIR = Path(__file__).resolve().parent.parent / "data" / "prices"


@dataclass(frozen=True, slots=True)
class ModelPrice:
    input_per_1k: float
    output_per_1k: float
    per_call: float = 0.0


@dataclass(frozen=True, slots=True)
class PriceTable:
    version: str
    models: dict[str, ModelPrice]

    def price(self, model_id: str) -> ModelPrice | None:
        return self.models.get(model_id)

    def cost_nanos(self, model_id: str, input_tokens: int, output_tokens: int, calls: int = 1) -> int:
        p = self.price(model_id)
        if p is None:
            return 0
        # nano-dollars per token = price_per_1k * 1e9 / 1e3; rounded once, per usage record
        return round(input_tokens * p.input_per_1k * 1_000_000 + output_tokens * p.output_per_1k * 1_000_000
                     + calls * p.per_call * NANOS)

    def priced(self, usage: Usage) -> Usage:
        """The usage with ``cost_usd`` (exact to the nano-dollar) and the price version set."""
        nanos = self.cost_nanos(usage.model_id, usage.input_tokens, usage.output_tokens)
        usage.cost_usd = nanos / NANOS
        usage.price_version = self.version if self.price(usage.model_id) else f"{self.version}:unpriced"
        return usage


def batch_model_id(model_id: str) -> str:
    """The price-table (and ledger) id of ``model_id`` run as Bedrock batch inference."""
    return f"{model_id}{BATCH_SUFFIX}"


@lru_cache(maxsize=8)
def load_price_table(name: str) -> PriceTable:
    """A table by name (shipped in the package) or by path. Fails loudly on a malformed file."""
    path = Path(name)
    if not path.suffix:
        path = _PRICES_DIR / f"{name}.json"
    if not path.is_file():
        shipped = sorted(p.stem for p in _PRICES_DIR.glob("*.json"))
        raise ValueError(f"price table {name!r} not found (shipped tables: {', '.join(shipped)})")
    data = json.loads(path.read_text(encoding="utf-8"))
    version = data.get("version")
    if not version or not isinstance(data.get("models"), dict):
        raise ValueError(f"price table {path} needs a 'version' and a 'models' object")
    models = {}
    for model_id, p in data["models"].items():
        models[model_id] = ModelPrice(float(p.get("input_per_1k", 0.0)), float(p.get("output_per_1k", 0.0)),
                                      float(p.get("per_call", 0.0)))
        if min(models[model_id].input_per_1k, models[model_id].output_per_1k, models[model_id].per_call) < 0:
            raise ValueError(f"price table {path}: negative price for {model_id}")
    return PriceTable(version=str(version), models=models)


def metered(model_id: str, purpose: str, *, input_tokens: int | None, output_tokens: int | None,
            input_text: str | None = None, output_text: str | None = None) -> Usage:
    """A usage record from a provider's usage fields; where the provider reported none, tiktoken
    counts the text and the record says ``estimated=True``."""
    estimated = False
    if input_tokens is None:
        input_tokens = count_tokens(input_text or "") if input_text else 0
        estimated = bool(input_text)
    if output_tokens is None:
        output_tokens = count_tokens(output_text or "") if output_text else 0
        estimated = estimated or bool(output_text)
    return Usage(model_id=model_id, purpose=purpose, input_tokens=int(input_tokens), output_tokens=int(output_tokens),
                 estimated=estimated)

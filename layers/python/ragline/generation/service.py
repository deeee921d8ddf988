"""The generation service: everything between the retrieved passages and the answer text.

Per question: route to a tier (:mod:`.router`) -> check the tenant's budget (soft: alert; hard:
refuse with 429 or downgrade to the small tier) -> pack the tier's context (passages by score
under the tier's token budget and passage count) -> call the tier's model through its token
bucket, within the request's time budget, failing over to the fallback model on throttling,
5xx, timeouts or any other model error -> when every model failed, a 503 naming them, or (with
``generation.unavailable_mode = "passages"``) the retrieved passages, labelled as such.

Every model call of the request (query embedding, rerank, generation) becomes a priced
:class:`~ragline.models.Usage` written to the ledger in one atomic record (:meth:`settle`).
With no chat model configured (the local default) the extractive answerer answers, and says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import DependencyUnavailable, ModelError
from ..ledger.budget import BudgetGuard, BudgetState, Reservation
from ..ledger.pricing import NANOS, PriceTable, load_price_table, metered
from ..models import Generation, SearchHit, Usage
from ..observability import logger, metric, segment
from ..ports import ChatModel, Ledger
from ..runtime import remaining_s
from ..settings import Settings, TierSettings
from ..tokens import count_tokens
from .extractive import ExtractiveAnswerer
from .prompt import SYSTEM, build_prompt
from .ratelimit import RateLimiter
from .router import LARGE, SMALL, Route, route

UNAVAILABLE_MODEL = "ragline/passages-only"
# share of the remaining time the primary may use when a fallback is waiting behind it
PRIMARY_SHARE = 0.6


def _endpoint(model: ChatModel) -> str:
    return getattr(model, "endpoint", None) or model.model_id


@dataclass(slots=True)
class GenerationResult:
    generation: Generation
    context: list[SearchHit]
    usages: list[Usage]
    route: Route
    notes: list[str] = field(default_factory=list)
    # the budget reservation the request's ledger record releases (ledger.budget)
    reservation: Reservation | None = None


class GenerationService:
    def __init__(
        self,
        settings: Settings,
        *,
        ledger: Ledger,
        small: ChatModel | None = None,
        large: ChatModel | None = None,
        fallback: ChatModel | None = None,
        embedder_id: str | None = None,
        select_context: Callable[[list[SearchHit], int], list[SearchHit]],
        prices: PriceTable | None = None,
        limiter: RateLimiter | None = None,
        deadline: Callable[[], float] = remaining_s,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self._clock = clock  # the request's time budget is measured on it (tests pass a fake one)
        self.ledger = ledger
        self.small = small
        self.large = large or small
        self.fallback = fallback
        self.embedder_id = embedder_id
        self._select_context = select_context
        self.prices = prices or load_price_table(settings.costs.price_table)
        gen = settings.generation
        self.limiter = limiter or RateLimiter({m: (float(r), int(b)) for m, (r, b) in gen.rate_limits.items()},
                                              max_wait_s=gen.rate_limit_max_wait_s)
        self.budget = BudgetGuard(settings.costs, ledger)
        for name, model in ((SMALL, self.small), (LARGE, self.large)):
            configured = gen.small if name == SMALL else gen.large
            if configured is not None and model is not None and configured.model != model.model_id:
                raise ValueError(f"generation.{name}.model is {configured.model!r} but the {name} tier's model is "
                                 f"{model.model_id!r}: configure the tier with the model it calls")
        self.deadline = deadline
        self.extractive = ExtractiveAnswerer()

    # ------------------------------------------------------------------ configuration
    def tier(self, name: str) -> TierSettings:
        gen = self.settings.generation
        configured = gen.small if name == SMALL else gen.large
        if configured is not None:
            return configured
        model = self.small if name == SMALL else self.large
        budget = self.settings.retrieval.context_token_budget
        top_k = self.settings.retrieval.top_k
        return TierSettings(
            model=model.model_id if model is not None else self.extractive.model_id,
            context_token_budget=budget if name == SMALL else 2 * budget,
            max_passages=top_k,  # both tiers pack from the top_k retrieval returns
            max_output_tokens=512 if name == SMALL else 1024,
        )

    def _model(self, name: str) -> ChatModel | None:
        return self.small if name == SMALL else self.large

    # ------------------------------------------------------------------ the answer
    def answer(self, tenant: str, question: str, hits: list[SearchHit], *, tier: str | None = None,
               system: str | None = None, budget: BudgetState | None = None) -> GenerationResult:
        """``tier`` forces a tier (an A/B variant's model_tier) instead of the router's choice;
        ``system`` replaces the system prompt (an A/B variant's prompt); ``budget`` is the
        tenant's budget state when the caller checked it already (before embedding the question)."""
        gen_settings = self.settings.generation
        chosen = route(question, long_question_tokens=gen_settings.route_long_question_tokens)
        if tier in (SMALL, LARGE) and tier != chosen.tier:
            chosen = Route(tier, f"experiment variant selects the {tier} tier")
        notes: list[str] = []
        state = budget or self.budget.check(tenant)  # raises BudgetExceeded (429) at a refusing hard limit
        if state.downgrade:
            notes.append(state.note or "budget spent; answered by the cheaper tier")
            if chosen.tier == LARGE:
                chosen = Route(SMALL, f"downgraded from large ({chosen.reason}): budget spent")
        reservation = None
        while True:
            tier = self.tier(chosen.tier)
            context = self._select_context(list(hits[: tier.max_passages]), tier.context_token_budget)
            primary = self._model(chosen.tier)
            if primary is None or not context:
                logger().info("route", extra={"route": chosen.tier, "route_reason": chosen.reason, "tenant": tenant,
                                              "passages": len(context), "context_budget": tier.context_token_budget})
                gen = self.extractive.answer(question, context)
                return GenerationResult(gen, context, [], chosen, notes)
            # the fallback unless it is the very endpoint that failed (the same model in another
            # region is another endpoint)
            chain = [primary] + ([self.fallback] if self.fallback is not None
                                 and _endpoint(self.fallback) != _endpoint(primary) else [])
            prompt = build_prompt(question, context)
            system_prompt = system or SYSTEM
            if not self.budget.can_reserve(state):
                break
            # a hard budget: reserve the worst case first. Within the budget: against the limit;
            # in downgrade mode a request that does not fit goes to the cheaper tier, which may
            # spend up to twice the limit; otherwise it is refused (429)
            worst = self._worst_case_usd(chain, system_prompt, prompt, tier)
            downgrading = self.settings.costs.hard_limit_action == "downgrade"
            ceiling = 2 * state.hard_usd if downgrading and (state.downgrade or chosen.tier == SMALL) else state.hard_usd
            reservation = self.budget.try_reserve(tenant, worst, ceiling)
            if reservation is None and downgrading and ceiling == state.hard_usd:
                chosen = Route(SMALL, f"downgraded from large ({chosen.reason}): this request's worst case would pass "
                                      "the daily budget")
                notes.append("the daily budget has too little room left for the large tier; answered by the cheaper tier")
                continue
            if reservation is None:
                raise self.budget.refuse(tenant, state, worst, ceiling)
            break
        logger().info("route", extra={"route": chosen.tier, "route_reason": chosen.reason, "tenant": tenant,
                                      "passages": len(context), "context_budget": tier.context_token_budget})
        try:
            result = self._generate(chain, question, context, chosen, notes, system_prompt, prompt, tier)
        except BaseException:
            self._release_quietly(tenant, reservation)
            raise
        result.reservation = reservation
        return result

    def _release_quietly(self, tenant: str, reservation: Reservation | None) -> None:
        """Give a reservation back; a failure to do so is logged, never raised over the request's
        own error (the reservation then stays counted until its lease expires: it errs on refusing)."""
        try:
            self.budget.release(tenant, reservation)
        except Exception:  # noqa: BLE001
            logger().exception("budget reservation not released", extra={"tenant": tenant})

    # tiktoken's cl100k counts fewer tokens than some providers' tokenizers for the same text
    # (Claude's by ~10-20% on English): the worst case allows for 30% more
    WORST_CASE_INPUT_MARGIN = 1.3

    def _worst_case_usd(self, chain: Sequence[ChatModel], system_prompt: str, prompt: str, tier: TierSettings) -> float:
        tokens_in = math.ceil(count_tokens(system_prompt + "\n" + prompt) * self.WORST_CASE_INPUT_MARGIN)
        return max(self.prices.cost_nanos(m.model_id, tokens_in, tier.max_output_tokens) for m in chain) / NANOS

    def _generate(self, chain: Sequence[ChatModel], question: str, context: list[SearchHit], chosen: Route,
                  notes: list[str], system_prompt: str, prompt: str, tier: TierSettings) -> GenerationResult:
        gen_settings = self.settings.generation
        failures: list[str] = []
        spent: list[Usage] = []  # failed calls the provider billed all the same
        started = self._clock()
        budget_s = min(gen_settings.timeout_s, self.deadline(gen_settings.timeout_s))
        for position, model in enumerate(chain):
            left = budget_s - (self._clock() - started)
            if left <= 0:
                failures.append(f"{model.model_id} not tried: time budget spent")
                continue
            share = left * PRIMARY_SHARE if position < len(chain) - 1 else left
            try:
                # a token per request sent, the adapter's retries included; None: the model has no bucket
                acquire = self.limiter.acquirer(model.model_id)
                with segment("generate"):
                    gen = model.generate(system_prompt, prompt, max_tokens=tier.max_output_tokens, timeout_s=share,
                                         **({"acquire": acquire} if acquire else {}))
            except DependencyUnavailable as exc:  # ModelError included
                failures.append(exc.message)
                billed = getattr(exc, "billed", None)
                if billed is not None:
                    spent.append(metered(model.model_id, "generation_failed", input_tokens=billed[0],
                                         output_tokens=billed[1], input_text=system_prompt + "\n" + prompt,
                                         output_text=""))
                metric("ModelFailure", 1)
                logger().warning("model failed", extra={"model": model.model_id, "reason": exc.message,
                                                        "position": position})
                continue
            purpose = "generation" if position == 0 else "generation_fallback"
            usage = metered(
                gen.model_id, purpose,
                input_tokens=gen.input_tokens if gen.usage_reported else None,
                output_tokens=gen.output_tokens if gen.usage_reported else None,
                input_text=system_prompt + "\n" + prompt, output_text=gen.text,
            )
            if position > 0:
                metric("ModelFailover", 1)
                notes.append(f"answered by the fallback model {model.model_id} after: {'; '.join(failures)}")
            return GenerationResult(gen, context, [*spent, usage], chosen, notes)
        return self._unavailable(question, context, chosen, notes, [m.model_id for m in chain], failures, spent)

    def _unavailable(self, question: str, context: list[SearchHit], chosen: Route, notes: list[str],
                     models: Sequence[str], failures: list[str], spent: Sequence[Usage] = ()) -> GenerationResult:
        metric("GenerationUnavailable", 1)
        reason = f"generation unavailable: every model failed ({'; '.join(failures)})"
        if self.settings.generation.unavailable_mode != "passages":
            err = ModelError(reason + f" [models tried: {', '.join(models)}]")
            err.usages = list(spent)  # what the failed calls were billed: the request's error path records it
            raise err
        passages = self.extractive.answer(question, context)
        body = passages.text.split("\n\n", 1)[-1]
        text = ("Generation is unavailable right now; these are the most relevant passages, quoted, "
                "not a generated answer.\n\n" + body)
        notes.append(reason)
        gen = Generation(text=text, model_id=UNAVAILABLE_MODEL, generative=False,
                         used_citations=passages.used_citations)
        return GenerationResult(gen, context, list(spent), chosen, notes)

    # ------------------------------------------------------------------ the ledger
    def settle(self, tenant: str, query_id: str, question: str, collected: Sequence[Usage],
               usages: Sequence[Usage], *, embedded: bool = True, reservation: Reservation | None = None) -> list[Usage]:
        """Price every model call of the request and record them in one ledger write. The query
        embedding is estimated with tiktoken when the embedder reported no usage of its own;
        ``embedded=False`` (an exact repeat answered by its key) bills no embedding at all."""
        calls = [u.model_copy() for u in collected]
        if embedded and self.embedder_id and not any(u.purpose == "embed_query" for u in calls):
            calls.insert(0, metered(self.embedder_id, "embed_query", input_tokens=None, output_tokens=None,
                                    input_text=question))
        calls.extend(u.model_copy() for u in usages)
        priced = [self.prices.priced(u) for u in calls]
        try:
            # one record per request (record_id): if the request fails after this write, its
            # error path settles again, and that second write must not bill the calls twice
            if reservation is not None:  # the reservation is released in the same write
                self.ledger.record(tenant, query_id, priced, record_id="request", release=reservation.release_args())
            elif priced:
                self.ledger.record(tenant, query_id, priced, record_id="request")
        except BaseException:
            self._release_quietly(tenant, reservation)
            raise
        if priced:
            cost = sum(u.cost_usd for u in priced)
            metric("CostNanoUsd", round(cost * 1e9))
            metric("TokensIn", sum(u.input_tokens for u in priced))
            metric("TokensOut", sum(u.output_tokens for u in priced))
            try:
                self.budget.after_record(tenant)
            except Exception:  # noqa: BLE001 - the answer is made and billed; the alert must not fail it
                logger().exception("soft budget check after the record failed", extra={"tenant": tenant})
        return priced

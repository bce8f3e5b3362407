"""A canary's state: its policy, its steps and its decisions, with pure transitions, and where it is kept.

    .mlctl/canary/<model>.json   one document per model, compare-and-swap (a DocumentStore), read by the gateway

`status` is running (the gateway routes `weight` percent to `<model>.canary`), promoted or aborted (weight 0).
A canary that passed its last step but may not be promoted automatically (a check NOT MADE) stays running
at that step: it holds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime

from controlplane import defaults
from controlplane.errors import NotFoundError, UsageError
from controlplane.store.base import Store
from controlplane.store.documents import DocumentStore
from controlplane.store.repository import CANARY_SUFFIX

STATE_PREFIX = ".mlctl/canary"
RUNNING, PROMOTED, ABORTED = "running", "promoted", "aborted"


def canary_model(model: str) -> str:
    """The Triton model a canary of `model` is served under (its companion)."""
    return f"{model}{CANARY_SUFFIX}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class CanaryPolicy:
    min_requests: int = defaults.CANARY_MIN_REQUESTS  # per arm and step before a step is judged
    alpha: float = defaults.CANARY_ALPHA
    max_error_excess: float = defaults.CANARY_MAX_ERROR_EXCESS
    p99_ratio: float = defaults.CANARY_P99_RATIO
    p99_slack_ms: float = defaults.CANARY_P99_SLACK_MS
    min_labels: int = defaults.MIN_LABELS  # per arm, over the whole canary: fewer and accuracy is NOT MADE
    accuracy_drop: float = defaults.ACCURACY_DROP
    # opt-in (--estimate-missing-labels): an accuracy check short of labels is judged on each arm's estimated
    # accuracy (CBPE from its logged scores), reported as estimated with its band
    estimate_missing_labels: bool = False

    def __post_init__(self) -> None:
        if self.p99_ratio < 1 or self.p99_slack_ms < 0:
            raise UsageError(f"the latency check needs --p99-ratio of at least 1 and --p99-slack-ms of at least 0 "
                             f"(got {self.p99_ratio:g} and {self.p99_slack_ms:g})",
                             hint="the canary breaches when its p99 exceeds stable's p99 x ratio + slack")


@dataclass(frozen=True)
class CanaryState:
    model: str
    channel: str
    stable: int
    canary: int
    weight: float  # percent of traffic to the canary now
    steps: tuple[float, ...]
    step_index: int
    interval_s: float  # 0: stepped by hand ('mlctl canary step')
    status: str  # running | promoted | aborted
    started_at: str
    step_started_at: str
    shadow: bool = False
    sticky: bool = False
    policy: CanaryPolicy = field(default_factory=CanaryPolicy)
    decisions: tuple[dict, ...] = ()
    # the user accepted automatic promotion without an accuracy check (--allow-unlabelled)
    allow_unlabelled: bool = False

    # --- transitions (pure) ----------------------------------------------------------------------
    @classmethod
    def begin(cls, model: str, channel: str, stable: int, canary: int, steps: tuple[float, ...], interval_s: float,
              policy: CanaryPolicy, *, shadow: bool = False, sticky: bool = False, allow_unlabelled: bool = False,
              now: str | None = None) -> CanaryState:
        if stable == canary:
            raise UsageError(f"version {canary} is already the stable version of {channel!r}")
        stamp = now or now_iso()
        return cls(model, channel, stable, canary, steps[0], steps, 0, interval_s, RUNNING, stamp, stamp, shadow, sticky,
                   policy, (), allow_unlabelled)

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def at_last_step(self) -> bool:
        return self.step_index + 1 >= len(self.steps)

    @property
    def automatic(self) -> bool:
        return self.interval_s > 0

    @property
    def holding(self) -> bool:
        """Running at its last step after a pass that could not promote it (its last decision is a hold)."""
        return self.running and bool(self.decisions) and self.decisions[-1]["action"] == "canary-hold"

    def require_running(self) -> CanaryState:
        if not self.running:
            raise NotFoundError(f"model {self.model!r} has no running canary (its last one, v{self.canary}, was {self.status})",
                                hint=f"start one: mlctl canary start {self.model} VERSION")
        return self

    def advanced(self, now: str | None = None) -> CanaryState:
        """The next step, its clock started now."""
        if self.at_last_step:
            raise UsageError(f"the canary of {self.model!r} is at its last step ({self.weight}%)")
        index = self.step_index + 1
        return replace(self, step_index=index, weight=self.steps[index], step_started_at=now or now_iso())

    def ended(self, status: str) -> CanaryState:
        """Promoted or aborted: no traffic to the canary any more."""
        return replace(self.require_running(), weight=0.0, status=status)

    def decided(self, decision: dict) -> CanaryState:
        return replace(self, decisions=(*self.decisions, decision))

    # --- document --------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: bytes | str, where: str = "canary state") -> CanaryState:
        try:
            data = json.loads(text)
            data["steps"] = tuple(data["steps"])
            data["decisions"] = tuple(data.get("decisions", ()))
            data["policy"] = CanaryPolicy(**data.get("policy", {}))
            return cls(**data)
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{where} is not a valid mlctl canary state: {exc}",
                             hint="restore it from the history ('mlctl history MODEL'), or delete it and start again") from exc


def decision(state: CanaryState, action: str, outcome: str, detail: str, evidence: dict | None = None,
             now: str | None = None) -> dict:
    """One entry of the canary's decisions (the model's audit history gets the same)."""
    return {"time": now or now_iso(), "action": action, "weight": state.weight, "outcome": outcome, "detail": detail,
            "evidence": evidence or {}}


def check_weight(weight: float) -> float:
    if not 0 <= weight <= 100:
        raise UsageError(f"canary weight {weight} must be between 0 and 100 (percent)")
    return float(weight)


def parse_steps(text: str | None, weight: float) -> tuple[float, ...]:
    if not text:
        return (check_weight(weight),)
    try:
        steps = tuple(check_weight(float(s)) for s in text.split(",") if s.strip())
    except ValueError:
        raise UsageError(f"steps {text!r} must be percentages separated by commas, e.g. 10,25,50,100") from None
    if not steps or list(steps) != sorted(steps):
        raise UsageError(f"steps {text!r} must rise, e.g. 10,25,50,100")
    return steps


class CanaryStore(DocumentStore[CanaryState]):
    """Canary states in the repository; `load(model)` is (state or None, token)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store, STATE_PREFIX, parse=CanaryState.from_json, dump=CanaryState.to_json,
                         name_of=lambda state: state.model)

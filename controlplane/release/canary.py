"""Progressive delivery: a canary version takes part of a channel's traffic through the gateway, is judged
against the stable version at each step, and is promoted or aborted automatically.

- The canary is served under its own Triton model name, `<model>.canary` (a copy of the version, checked
  against its manifest). Unversioned requests to `<model>` therefore keep reaching the stable version: the
  canary is never the highest version of `<model>`.
- The gateway reads `.mlctl/canary/<model>.json` (compare-and-swap, like the channels) and routes `weight`
  percent of `<model>`'s requests to `<model>.canary`: an exact weighted round-robin, or a hash of the client
  key when sticky; in shadow mode it answers from stable and mirrors to the canary.
- Each step is judged from the prediction log: error rates (two-proportion z-test), p99 latency and, once
  enough labels arrived, accuracy. Every decision goes into the model's audit history with its evidence.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone

import numpy as np

from controlplane.errors import ConflictError, NotFoundError, UsageError

CANARY_SUFFIX = ".canary"
DRAIN_S = 3.0  # after routing stops, before the canary is unloaded: gateways re-read the state every second
OK, ERRORS = {"ok", "shadow-ok"}, {"error", "shadow-error"}
STATE_PREFIX = ".mlctl/canary"


def canary_model(model: str) -> str:
    return f"{model}{CANARY_SUFFIX}"


@dataclass(frozen=True)
class CanaryPolicy:
    min_requests: int = 100  # per arm and step before judging
    alpha: float = 0.01  # one-sided z-test on error rates
    max_error_excess: float = 0.01  # and the canary's error rate must exceed stable's by this much to abort
    p99_ratio: float = 1.5  # canary p99 above stable p99 x this ...
    p99_slack_ms: float = 5.0  # ... plus this is a breach
    min_labels: int = 50
    accuracy_drop: float = 0.05


@dataclass(frozen=True)
class CanaryState:
    model: str
    channel: str
    stable: int
    canary: int
    weight: float  # percent of traffic to the canary now
    steps: tuple[float, ...]
    step_index: int
    interval_s: float
    status: str  # running | promoted | aborted
    started_at: str
    step_started_at: str
    shadow: bool = False
    sticky: bool = False
    policy: CanaryPolicy = field(default_factory=CanaryPolicy)
    decisions: tuple[dict, ...] = ()

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: bytes | str) -> CanaryState:
        data = json.loads(text)
        data["steps"] = tuple(data["steps"])
        data["decisions"] = tuple(data.get("decisions", ()))
        data["policy"] = CanaryPolicy(**data.get("policy", {}))
        return cls(**data)


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


# --- routing (used by the gateway) ----------------------------------------------------------------
class Router:
    """Exact weighted round-robin: after n requests, round(n * weight / 100) went to the canary."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def to_canary(self, model: str, weight: float, sticky_key: str | None = None) -> bool:
        if weight <= 0:
            return False
        if weight >= 100:
            return True
        if sticky_key is not None:
            import hashlib

            bucket = int.from_bytes(hashlib.sha256(f"{model}:{sticky_key}".encode()).digest()[:8], "big") % 10_000
            return bucket < weight * 100
        n = self.counts.get(model, 0)
        self.counts[model] = n + 1
        return math.floor((n + 1) * weight / 100) > math.floor(n * weight / 100)


# --- judging (pure) -------------------------------------------------------------------------------
def error_rate_test(stable_errors: int, stable_total: int, canary_errors: int, canary_total: int) -> float:
    """One-sided p-value that the canary's error rate is higher (two-proportion z-test, pooled)."""
    if not stable_total or not canary_total:
        return 1.0
    p1, p2 = stable_errors / stable_total, canary_errors / canary_total
    pooled = (stable_errors + canary_errors) / (stable_total + canary_total)
    se = math.sqrt(pooled * (1 - pooled) * (1 / stable_total + 1 / canary_total))
    if se == 0:
        return 1.0 if p2 <= p1 else 0.0
    z = (p2 - p1) / se
    return 0.5 * math.erfc(z / math.sqrt(2))


def judge(arms: dict[str, dict], policy: CanaryPolicy) -> tuple[str, dict]:
    """('pass' | 'breach' | 'wait', evidence) from per-arm figures {requests, errors, latencies_ms, labelled, correct}."""
    stable, canary = arms["stable"], arms["canary"]
    evidence: dict = {"stable": _summary(stable), "canary": _summary(canary)}
    if canary["requests"] < policy.min_requests or stable["requests"] < policy.min_requests:
        return "wait", {**evidence, "reason": f"fewer than {policy.min_requests} requests on an arm"}
    p = error_rate_test(stable["errors"], stable["requests"], canary["errors"], canary["requests"])
    excess = canary["errors"] / canary["requests"] - stable["errors"] / stable["requests"]
    evidence["error_rate_pvalue"] = p
    breaches = []
    if p < policy.alpha and excess > policy.max_error_excess:
        breaches.append(f"error rate {excess:+.2%} over stable (p={p:.2g})")
    s99, c99 = evidence["stable"]["p99_ms"], evidence["canary"]["p99_ms"]
    if s99 is not None and c99 is not None and c99 > s99 * policy.p99_ratio + policy.p99_slack_ms:
        breaches.append(f"p99 {c99:.1f} ms against stable {s99:.1f} ms")
    if canary["labelled"] >= policy.min_labels and stable["labelled"] >= policy.min_labels:
        drop = stable["correct"] / stable["labelled"] - canary["correct"] / canary["labelled"]
        evidence["accuracy_drop"] = drop
        if drop > policy.accuracy_drop:
            breaches.append(f"accuracy {drop:.2%} below stable")
    if breaches:
        return "breach", {**evidence, "reason": "; ".join(breaches)}
    return "pass", {**evidence, "reason": "every check within bounds"}


def _summary(arm: dict) -> dict:
    lat = arm["latencies_ms"]
    return {"requests": arm["requests"], "errors": arm["errors"],
            "error_rate": arm["errors"] / arm["requests"] if arm["requests"] else None,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
            "labelled": arm["labelled"], "accuracy": arm["correct"] / arm["labelled"] if arm["labelled"] else None}


def arms_from_log(predictions, feedback, model: str, stable: int, canary: int, since: datetime) -> dict[str, dict]:
    """Per-arm figures from the gateway's log since `since` (the canary arm logs the canary's version)."""
    from controlplane.quality.monitor import joined_all

    table = joined_all(predictions, feedback, model, since).to_pydict()
    arms = {}
    for name, version in (("stable", str(stable)), ("canary", str(canary))):
        # the canary's shadow answers (shadow mode) count for its arm; stable never runs in shadow
        idx = [i for i, v in enumerate(table["version"]) if v == version and table["status"][i] in OK | ERRORS]
        labelled = [i for i in idx if table["label"][i] is not None and table["status"][i] == "ok"]
        arms[name] = {
            "requests": len(idx),
            "errors": sum(1 for i in idx if table["status"][i] in ERRORS),
            "latencies_ms": [table["latency_ms"][i] for i in idx if table["status"][i] in OK],
            "labelled": len(labelled),
            "correct": sum(1 for i in labelled if table["label"][i] == table["predicted"][i]),
        }
    return arms


# --- state in the repository ----------------------------------------------------------------------
class CanaryStore:
    def __init__(self, store) -> None:
        self.store = store

    def key(self, model: str) -> str:
        return f"{STATE_PREFIX}/{model}.json"

    def load(self, model: str) -> tuple[CanaryState | None, str | None]:
        data, token = self.store.read_versioned(self.key(model))
        return (CanaryState.from_json(data) if data is not None else None), token

    def save(self, state: CanaryState, token: str | None) -> str:
        return self.store.write_if(self.key(state.model), state.to_json().encode(), token)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Canaries:
    """start / step / promote / abort, acting on the repository, the channel's replicas and the history."""

    def __init__(self, lifecycle, log_store=None, progress=None) -> None:
        self.lifecycle = lifecycle
        self.repo = lifecycle.repo
        self.states = CanaryStore(self.repo.store)
        self.log_store = log_store
        self.say = progress or (lambda _msg: None)

    def start(self, model: str, version: int, channel: str, steps: tuple[float, ...], interval_s: float,
              policy: CanaryPolicy, shadow: bool = False, sticky: bool = False) -> CanaryState:
        self.repo.manifest(model, version)  # NotFoundError for an unknown version
        problems = self.repo.verify(model, version)
        if problems:
            from controlplane.errors import CheckFailedError

            raise CheckFailedError(f"canary {model} v{version} does not match its manifest: {'; '.join(problems)}")
        current, token = self.states.load(model)
        if current is not None and current.status == "running":
            raise ConflictError(f"model {model!r} already has a running canary (v{current.canary} at {current.weight}%)",
                                hint=f"'mlctl canary abort {model}' or 'mlctl canary promote {model}' first")
        channel_state, _ = self.lifecycle.channels.load(model)
        stable = channel_state.channels.get(channel)
        if stable is None:
            raise NotFoundError(f"channel {channel!r} of {model!r} has no stable version to compare with",
                                hint=f"promote one first: mlctl promote {model} VERSION --to {channel}")
        if stable == version:
            raise UsageError(f"version {version} is already the stable version of {channel!r}")
        self._install_canary_model(model, version, channel)
        stamp = now_iso()
        state = CanaryState(model, channel, stable, version, steps[0], steps, 0, interval_s, "running", stamp, stamp,
                            shadow, sticky, policy)
        state = self._record(state, "canary-start", "succeeded", f"v{version} against v{stable} at {steps[0]}%, steps {list(steps)}")
        self.states.save(state, token)
        return state

    def _install_canary_model(self, model: str, version: int, channel: str) -> None:
        """`<model>.canary` holding only this version, loaded on the channel's replicas."""
        from controlplane.model import config as model_config
        from controlplane.triton.replicas import open_replicas

        name = canary_model(model)
        config = self.repo.config(model)
        config.name = name
        model_config.apply_version_policy(config, model_config.VersionPolicy("specific", (version,)))
        store = self.repo.store
        store.delete_tree(name)
        for rel in store.list_files(f"{model}/{version}"):
            store.write_bytes(f"{name}/{version}/{rel}", store.read_bytes(f"{model}/{version}/{rel}"))
        store.write_bytes(f"{name}/config.pbtxt", model_config.to_pbtxt(config).encode())
        replicas = open_replicas(self.lifecycle.targets.replicas(channel), self.lifecycle.control_key)
        signature = model_config.signature_of(config, api=True)
        try:
            for replica in replicas:
                replica.load(name, model_config.to_json(config))
                replica.wait_serving(name, version, signature, self.lifecycle.settle_timeout_s)
        finally:
            for replica in replicas:
                replica.close()

    def _remove_canary_model(self, state: CanaryState) -> None:
        from controlplane.errors import MlctlError
        from controlplane.triton.replicas import Replica

        for url in self.lifecycle.targets.replicas(state.channel):
            try:
                replica = Replica(url, self.lifecycle.control_key)
                try:
                    replica.unload(canary_model(state.model))
                finally:
                    replica.close()
            except MlctlError as exc:
                self.say(f"could not unload the canary from {url}: {exc}")
        self.repo.store.delete_tree(canary_model(state.model))

    def _record(self, state: CanaryState, action: str, outcome: str, detail: str, evidence: dict | None = None) -> CanaryState:
        """The decision, in the canary state and in the model's audit history."""
        decision = {"time": now_iso(), "action": action, "weight": state.weight, "outcome": outcome, "detail": detail,
                    "evidence": evidence or {}}
        channel_state, token = self.lifecycle.channels.load(state.model)
        from controlplane.model.provenance import current_actor

        actor = current_actor()
        entry_detail = detail + (f" evidence: {json.dumps(evidence, default=str)}" if evidence else "")
        self.lifecycle.channels.save(channel_state.note(action, state.channel, state.stable, state.canary, outcome,
                                                        entry_detail, actor, now_iso()), token)
        return replace(state, decisions=(*state.decisions, decision))

    def status(self, model: str) -> CanaryState:
        state, _ = self.states.load(model)
        if state is None:
            raise NotFoundError(f"model {model!r} has no canary", hint=f"start one: mlctl canary start {model} VERSION")
        return state

    def abort(self, model: str, reason: str = "aborted by hand", evidence: dict | None = None) -> CanaryState:
        state, token = self.states.load(model)
        if state is None or state.status != "running":
            raise NotFoundError(f"model {model!r} has no running canary")
        state = replace(state, weight=0.0, status="aborted")
        state = self._record(state, "canary-abort", "succeeded", reason, evidence)
        self.states.save(state, token)  # routing stops first, then the canary model goes
        time.sleep(DRAIN_S)
        self._remove_canary_model(state)
        return state

    def promote(self, model: str, reason: str = "promoted by hand", evidence: dict | None = None) -> CanaryState:
        state, token = self.states.load(model)
        if state is None or state.status != "running":
            raise NotFoundError(f"model {model!r} has no running canary")
        self.lifecycle.promote(model, state.canary, state.channel, f"canary: {reason}")
        state = replace(state, weight=0.0, status="promoted")
        state = self._record(state, "canary-promote", "succeeded", reason, evidence)
        self.states.save(state, token)
        time.sleep(DRAIN_S)
        self._remove_canary_model(state)
        return state

    def step(self, model: str) -> CanaryState:
        """Judge the current step from the log; advance, promote after the last step, or abort on a breach."""
        from controlplane.feedback.predlog import read_tables

        state, token = self.states.load(model)
        if state is None or state.status != "running":
            raise NotFoundError(f"model {model!r} has no running canary")
        if self.log_store is None:
            raise UsageError("judging a canary needs the prediction log", hint="pass --log or set MLCTL_PREDICTION_LOG")
        predictions, feedback = read_tables(self.log_store, model)
        arms = arms_from_log(predictions, feedback, model, state.stable, state.canary, datetime.fromisoformat(state.step_started_at))
        if state.weight >= 100:  # stable gets nothing at this step: compare with stable over the whole canary
            since_start = arms_from_log(predictions, feedback, model, state.stable, state.canary, datetime.fromisoformat(state.started_at))
            arms["stable"] = since_start["stable"]
        verdict, evidence = judge(arms, state.policy)
        self.say(f"{model}: canary v{state.canary} at {state.weight}%: {verdict} ({evidence['reason']})")
        if verdict == "breach":
            return self.abort(model, f"automatic: {evidence['reason']}", evidence)
        if verdict == "wait":
            return state
        if state.step_index + 1 >= len(state.steps):
            return self.promote(model, "automatic: every step passed", evidence)
        nxt = replace(state, step_index=state.step_index + 1, weight=state.steps[state.step_index + 1], step_started_at=now_iso())
        nxt = self._record(nxt, "canary-step", "succeeded", f"step passed at {state.weight}%, now {nxt.weight}%", evidence)
        self.states.save(nxt, token)
        return nxt

    def run(self, model: str, max_seconds: float = 3600.0) -> CanaryState:
        """Judge every `interval_s` until promoted or aborted (bounded by `max_seconds`); resumable."""
        deadline = time.monotonic() + max_seconds
        state = self.status(model)
        while state.status == "running" and time.monotonic() < deadline:
            time.sleep(min(state.interval_s, max(0.0, deadline - time.monotonic())))
            state = self.step(model)
        return state


def since_minutes(minutes: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(minutes=minutes)

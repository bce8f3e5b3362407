"""start / step / promote / abort / run: a canary acting on the repository, the channel's replicas and the
model's audit history. The judging is in judge.py, the state and its transitions in state.py.

Automatic promotion (after the last step of `step` or `run`) needs every check MADE: with too few labels the
accuracy check is NOT MADE and the canary holds at its last step (a `canary-hold` decision says what is
missing), unless it was started with `allow_unlabelled`. A breach, the accuracy's included, aborts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime

from controlplane import defaults
from controlplane.errors import (
    CheckFailedError,
    ConflictError,
    NotFoundError,
    UsageError,
)
from controlplane.quality.checks import NOT_MADE
from controlplane.quality.reference import load_reference
from controlplane.release.canary.companion import Companions, refuse_companion
from controlplane.release.canary.judge import (
    BREACH,
    WAIT,
    arms_from_log,
    judge,
    promotion_gap,
)
from controlplane.release.canary.state import (
    ABORTED,
    PROMOTED,
    CanaryPolicy,
    CanaryState,
    CanaryStore,
    canary_model,
    decision,
    now_iso,
)
from controlplane.security.enforce import check_version as check_signature


class Canaries:
    def __init__(self, lifecycle, log_store=None, progress: Callable[[str], None] | None = None) -> None:
        self.lifecycle = lifecycle
        self.repo = lifecycle.repo
        self.states = CanaryStore(self.repo.store)
        self.log_store = log_store
        self.say = progress or (lambda _msg: None)
        self.companions = Companions(lifecycle, self.say)

    # --- start -----------------------------------------------------------------------------------
    def start(self, model: str, version: int, channel: str, steps: tuple[float, ...], interval_s: float,
              policy: CanaryPolicy, shadow: bool = False, sticky: bool = False, allow_unlabelled: bool = False) -> CanaryState:
        """Check everything first (nothing changes on a refusal), then serve the companion and write the state."""
        refuse_companion(self.repo, model)
        self.repo.manifest(model, version)  # NotFoundError for an unknown version
        problems = self.repo.verify(model, version)
        if problems:
            raise CheckFailedError(f"canary {model} v{version} does not match its manifest: {'; '.join(problems)}",
                                   hint=f"run 'mlctl model verify {model} {version}'")
        check_signature(self.repo, model, version, channel, "start a canary of")  # the channel's signature policy
        current, token = self.states.load(model)
        if current is not None and current.running:
            raise ConflictError(f"model {model!r} already has a running canary (v{current.canary} at {current.weight}%)",
                                hint=f"'mlctl canary abort {model}' or 'mlctl canary promote {model}' first")
        state = CanaryState.begin(model, channel, self._stable(model, channel), version, steps, interval_s, policy,
                                  shadow=shadow, sticky=sticky, allow_unlabelled=allow_unlabelled)
        self.companions.install(model, version, channel)  # ConflictError first when the name is a published model
        unlabelled = ("; automatic promotion allowed without an accuracy check (--allow-unlabelled)" if allow_unlabelled
                      else f"; automatic promotion needs {policy.min_labels} labels per arm")
        if policy.estimate_missing_labels:
            unlabelled += ", or else each arm's estimated accuracy decides (--estimate-missing-labels)"
        detail = f"v{version} against v{state.stable} at {steps[0]}%, steps {list(steps)}{' (shadow)' if shadow else ''}{unlabelled}"
        state = self._record(state, "canary-start", "succeeded", detail)
        self.states.save(state, token)
        return state

    def _stable(self, model: str, channel: str) -> int:
        channel_state, _ = self.lifecycle.channels.load(model)
        stable = channel_state.channels.get(channel)
        if stable is None:
            raise NotFoundError(f"channel {channel!r} of {model!r} has no stable version to compare with",
                                hint=f"promote one first: mlctl promote {model} VERSION --to {channel}")
        return stable

    # --- reading ---------------------------------------------------------------------------------
    def status(self, model: str) -> CanaryState:
        state, _ = self.states.load(model)
        if state is None:
            raise NotFoundError(f"model {model!r} has no canary", hint=f"start one: mlctl canary start {model} VERSION")
        return state

    def _running(self, model: str) -> tuple[CanaryState, str | None]:
        state, token = self.states.load(model)
        if state is None:
            raise NotFoundError(f"model {model!r} has no running canary", hint=f"start one: mlctl canary start {model} VERSION")
        return state.require_running(), token

    # --- ending ----------------------------------------------------------------------------------
    def abort(self, model: str, reason: str = "aborted by hand", evidence: dict | None = None) -> CanaryState:
        state, token = self._running(model)
        return self._end(state, token, ABORTED, reason, evidence)

    def promote(self, model: str, reason: str = "promoted by hand", evidence: dict | None = None) -> CanaryState:
        state, token = self._running(model)
        return self._promote(state, token, reason, evidence)

    def _promote(self, state: CanaryState, token: str | None, reason: str, evidence: dict | None) -> CanaryState:
        self.lifecycle.promote(state.model, state.canary, state.channel, f"canary: {reason}")
        return self._end(state, token, PROMOTED, reason, evidence)

    def _end(self, state: CanaryState, token: str | None, status: str, reason: str, evidence: dict | None) -> CanaryState:
        """Routing stops first (the state), then, once gateways have re-read it, the companion goes."""
        action = "canary-promote" if status == PROMOTED else "canary-abort"
        state = self._record(state.ended(status), action, "succeeded", reason, evidence)
        self.states.save(state, token)
        # no gateway can be asked: each re-reads the state every CANARY_STATE_TTL_S, and this drains that
        time.sleep(defaults.CANARY_DRAIN_S)
        self.companions.remove(state.model, state.channel)
        return state

    # --- judging ---------------------------------------------------------------------------------
    def step(self, model: str) -> CanaryState:
        """Judge the current step from the log: abort on a breach; else advance, or after the last step promote
        (every check made) or hold (a check NOT MADE, e.g. too few labels)."""
        return self._step(model)[0]

    def _step(self, model: str) -> tuple[CanaryState, str]:
        """The new state and why it is so (the reason `run` gives when its time runs out)."""
        state, token = self._running(model)
        verdict, evidence = self._judge(state)
        self.say(f"{model}: canary v{state.canary} at {state.weight}%: {verdict} ({evidence['reason']})")
        if verdict == BREACH:
            return self._end(state, token, ABORTED, f"automatic: {evidence['reason']}", evidence), evidence["reason"]
        if verdict == WAIT:
            return state, evidence["reason"]
        if not state.at_last_step:
            nxt = state.advanced()
            nxt = self._record(nxt, "canary-step", "succeeded", f"step passed at {state.weight}%, now {nxt.weight}%: "
                                                                f"{evidence['reason']}", evidence)
            self.states.save(nxt, token)
            return nxt, evidence["reason"]
        gap = promotion_gap(evidence, state.allow_unlabelled)
        if gap:
            return self._hold(state, token, gap, evidence), gap
        accuracy = evidence["checks"]["accuracy"]
        unchecked = " (accuracy not checked: started with --allow-unlabelled)" if state.allow_unlabelled and \
            accuracy["status"] == NOT_MADE else ""
        if accuracy.get("basis") == "estimated":
            unchecked = " (accuracy ESTIMATED without labels: started with --estimate-missing-labels)"
        reason = f"automatic: every step passed{unchecked}: {evidence['reason']}"
        return self._promote(state, token, reason, evidence), evidence["reason"]

    def _judge(self, state: CanaryState) -> tuple[str, dict]:
        """Error rate and p99 from this step's requests; accuracy from the whole canary's labels."""
        from controlplane.feedback.predlog import read_tables

        if self.log_store is None:
            raise UsageError(f"judging the canary of {state.model!r} needs the prediction log",
                             hint="pass --log or set MLCTL_PREDICTION_LOG")
        predictions, feedback = read_tables(self.log_store, state.model)

        def arms(since: str) -> dict[str, dict]:
            return arms_from_log(predictions, feedback, state.model, state.stable, state.canary, datetime.fromisoformat(since))

        step_arms, whole = arms(state.step_started_at), arms(state.started_at)
        if state.weight >= 100:  # stable gets nothing at this step: compare with stable over the whole canary
            step_arms["stable"] = whole["stable"]
        estimates = None
        if state.policy.estimate_missing_labels:  # over the whole canary, as the labels
            from controlplane.release.canary.estimated import arm_estimates

            references = {v: load_reference(self.repo, state.model, v) for v in (state.stable, state.canary)}
            estimates = arm_estimates(predictions, state.model, state.stable, state.canary,
                                      datetime.fromisoformat(state.started_at), references)
        return judge(step_arms, state.policy, labels=whole, estimates=estimates)

    def _hold(self, state: CanaryState, token: str | None, gap: str, evidence: dict) -> CanaryState:
        """Stay running at the last step; the hold is recorded once, when it begins."""
        if state.holding:
            return state
        held = self._record(state, "canary-hold", "held", f"not promoted automatically: {gap}", evidence)
        self.states.save(held, token)
        return held

    def run(self, model: str, max_seconds: float = 3600.0) -> CanaryState:
        """Judge every `interval_s` until promoted or aborted; resumable. CheckFailedError, saying what is missing,
        when `max_seconds` pass first (the canary stays running)."""
        state = self.status(model)
        if state.running and not state.automatic:
            raise UsageError(f"the canary of {model!r} was started without --interval: it is stepped by hand",
                             hint=f"run 'mlctl canary step {model}' to judge it now, or abort it and start again with --interval")
        deadline, why = time.monotonic() + max_seconds, "not judged yet"
        while state.running:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise still_running(state, why, max_seconds)
            time.sleep(min(state.interval_s, remaining))  # the judging interval itself, not a wait for readiness
            state, why = self._step(model)
        return state

    # --- history ---------------------------------------------------------------------------------
    def _record(self, state: CanaryState, action: str, outcome: str, detail: str, evidence: dict | None = None) -> CanaryState:
        """The decision, in the canary state and in the model's audit history."""
        from controlplane.model.provenance import current_actor

        channel_state, token = self.lifecycle.channels.load(state.model)
        entry_detail = detail + (f" evidence: {json.dumps(evidence, default=str)}" if evidence else "")
        self.lifecycle.channels.save(channel_state.note(action, state.channel, state.stable, state.canary, outcome,
                                                        entry_detail, current_actor(), now_iso()), token)
        return state.decided(decision(state, action, outcome, detail, evidence))


def still_running(state: CanaryState, why: str, seconds: float) -> CheckFailedError:
    """The error `run` ends with when its time passes and the canary is neither promoted nor aborted."""
    where = f"at {state.weight}% (step {state.step_index + 1} of {len(state.steps)})"
    if state.holding:
        return CheckFailedError(
            f"the canary v{state.canary} of {state.model!r} passed its last step but was not promoted: {why}; it holds {where}",
            hint=f"send labels for its predictions (POST /v1/feedback), then 'mlctl canary step {state.model}'; or decide "
                 f"yourself: 'mlctl canary promote {state.model}' / 'mlctl canary abort {state.model}' (to promote without "
                 f"labels automatically, start the canary with --allow-unlabelled; to judge the estimated accuracy, with "
                 f"--estimate-missing-labels)")
    return CheckFailedError(
        f"the canary v{state.canary} of {state.model!r} was not decided within {seconds:g} s: {why}; it is still running {where}",
        hint=f"'mlctl canary run {state.model}' to keep judging, or 'mlctl canary promote|abort {state.model}'")


def aborted(state: CanaryState) -> CheckFailedError:
    """The error a command that judged a canary ends with when the canary was aborted."""
    last = next((d for d in reversed(state.decisions) if d["action"] == "canary-abort"), {"detail": "aborted"})
    return CheckFailedError(
        f"the canary v{state.canary} of {state.model!r} was aborted: {last['detail']}; channel {state.channel!r} stays at "
        f"v{state.stable}", hint=f"see 'mlctl history {state.model}' for the evidence")


__all__ = ["Canaries", "aborted", "canary_model", "still_running"]

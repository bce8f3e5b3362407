"""Progressive delivery: a canary version takes part of a channel's traffic through the gateway, is judged
against the stable version at each step, and is promoted, held or aborted.

- state.py: the policy, the state document and its pure transitions, and the store it lives in;
- router.py: which arm a request goes to (the gateway);
- judge.py: each check passed, breached or NOT MADE, from the prediction log;
- companion.py: `<model>.canary`, the Triton model the canary is served under;
- manager.py: start / step / promote / abort / run.

The gateway imports CanaryState, CanaryStore, Router and canary_model from here (nothing heavy loads: Triton
clients and the log reader are imported where they are used).
"""

from __future__ import annotations

# judge.py's `judge` is imported after the module itself, so the package attribute is the function
from controlplane.release.canary.judge import arms_from_log, error_rate_test, judge
from controlplane.release.canary.manager import Canaries
from controlplane.release.canary.router import Router
from controlplane.release.canary.state import (
    CanaryPolicy,
    CanaryState,
    CanaryStore,
    canary_model,
    check_weight,
    parse_steps,
)

__all__ = [
    "Canaries",
    "CanaryPolicy",
    "CanaryState",
    "CanaryStore",
    "Router",
    "arms_from_log",
    "canary_model",
    "check_weight",
    "error_rate_test",
    "judge",
    "parse_steps",
]

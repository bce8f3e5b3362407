"""One structured event per control-plane action (action, model, version, channel, duration, outcome,
error), written to stderr as JSON (`--log-format json`) or as one text line."""

from __future__ import annotations

import functools
import json
import sys
import time
from datetime import datetime, timezone

DEFAULT_FIELDS = {"model": ("model",), "version": ("version",), "channel": ("channel",)}


def emit_event(log_format: str, event: dict) -> None:
    if log_format == "json":
        sys.stderr.write(json.dumps(event, default=str) + "\n")
    else:
        parts = " ".join(f"{k}={v}" for k, v in event.items() if v not in (None, "") and k not in ("time", "action"))
        sys.stderr.write(f"[mlctl] {event['action']} {parts}\n")


def action(name: str, **fields: str):
    """Decorate a command: time it and emit its event, whatever the outcome. `fields` maps an event field
    to the command parameter holding it when the names differ (e.g. channel="to")."""
    sources = {key: ((fields[key],) if key in fields else params) for key, params in DEFAULT_FIELDS.items()}

    def decorate(command):
        @functools.wraps(command)
        def run(*args, **kwargs):
            from controlplane.errors import MlctlError

            event = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "action": name}
            for key, params in sources.items():
                event[key] = next((kwargs[p] for p in params if kwargs.get(p) is not None), None)
            started = time.monotonic()
            outcome, error = "succeeded", None
            try:
                return command(*args, **kwargs)
            except MlctlError as exc:
                outcome, error = "failed", str(exc)
                event["exit_code"] = exc.exit_code
                raise
            except BaseException as exc:
                exit_code = getattr(exc, "exit_code", None)
                if exit_code:
                    outcome, event["exit_code"] = "failed", exit_code
                elif exit_code is None:
                    outcome, error = "failed", f"{type(exc).__name__}: {exc}"
                raise
            finally:
                event.update(duration_s=round(time.monotonic() - started, 3), outcome=outcome, error=error)
                ctx = kwargs.get("ctx")
                emit_event(getattr(getattr(ctx, "obj", None), "log_format", "text"), event)

        return run

    return decorate

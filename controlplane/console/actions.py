"""Promote, rollback and canary abort from the console: the library calls the CLI makes, so the history records
them like any other, behind three checks made before anything changes.

- CSRF: a double-submit token. A page sets a random token in a SameSite=Strict, HttpOnly cookie and puts the
  same value in each form; a request that changes state must carry both, equal. Another site can make a
  browser send the cookie, never read it.
- The admin key: one of the console's admin keys (`--admin-keys`, MLCTL_CONSOLE_ADMIN_KEYS), typed into the
  form. Without configured keys the console is read-only.
- A reason: required, for the audit history.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from controlplane.console.settings import ConsoleSettings
from controlplane.errors import AccessDeniedError, UsageError

CSRF_COOKIE = "mlctl_console_csrf"
MAX_REASON = 500


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def check_csrf(cookie: str | None, field: str | None) -> None:
    if not cookie or not field or not _equal(cookie, field):
        raise AccessDeniedError("the form's CSRF token is missing or does not match this browser's",
                      hint="reload the model page and submit the form again; nothing was changed")


def check_admin(settings: ConsoleSettings, key: str | None) -> None:
    if settings.read_only:
        raise AccessDeniedError("this console is read-only: it was started without admin keys",
                      hint="restart it with --admin-keys (or MLCTL_CONSOLE_ADMIN_KEYS) to allow actions; nothing was changed")
    if not key:
        raise AccessDeniedError("no admin key was given", hint="type an admin key into the form; nothing was changed")
    if not any(_equal(key, allowed) for allowed in settings.admin_keys):
        raise AccessDeniedError("the admin key is wrong", hint="use one of the keys the console was started with; nothing was changed")


def check_reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise UsageError("a reason is required for the audit history", hint="say why in the form; nothing was changed")
    if len(reason) > MAX_REASON:
        raise UsageError(f"the reason is {len(reason)} characters long, over {MAX_REASON}", hint="shorten it; nothing was changed")
    return reason


def _int(value: str | None, what: str, optional: bool = False) -> int | None:
    if optional and not (value or "").strip():
        return None
    try:
        return int((value or "").strip())
    except ValueError:
        raise UsageError(f"{what} {value!r} is not a whole number", hint="nothing was changed") from None


@dataclass(frozen=True)
class Outcome:
    model: str
    title: str
    summary: str


class Actions:
    """`form` is the decoded form: csrf, admin_key, reason and the action's own fields."""

    def __init__(self, settings: ConsoleSettings, lifecycle_factory) -> None:
        self.settings = settings
        self.lifecycle = lifecycle_factory

    def _checked(self, form: dict, cookie: str | None) -> str:
        check_csrf(cookie, form.get("csrf"))
        check_admin(self.settings, form.get("admin_key"))
        return check_reason(form.get("reason"))

    def promote(self, model: str, form: dict, cookie: str | None) -> Outcome:
        reason = self._checked(form, cookie)
        version = _int(form.get("version"), "version")
        channel = (form.get("channel") or "").strip()
        report = self.lifecycle().promote(model, version, channel, reason)
        return Outcome(model, "promote", _switched(report))

    def rollback(self, model: str, form: dict, cookie: str | None) -> Outcome:
        reason = self._checked(form, cookie)
        to = _int(form.get("to"), "version to roll back to", optional=True)
        channel = (form.get("channel") or "").strip() or "production"
        report = self.lifecycle().rollback(model, channel, to, reason)
        return Outcome(model, "rollback", _switched(report))

    def abort_canary(self, model: str, form: dict, cookie: str | None) -> Outcome:
        from controlplane.release.canary import Canaries

        reason = self._checked(form, cookie)
        state = Canaries(self.lifecycle()).abort(model, reason)
        return Outcome(model, "canary abort", f"canary v{state.canary} of {model} aborted: all traffic back to v{state.stable}")


def _switched(report) -> str:
    if report.outcome == "unchanged":
        return f"{report.model}: channel {report.channel} already at version {report.to_version}; nothing to do"
    per = ", ".join(f"{r['url']} {r['seconds']:.2f} s" for r in report.replicas) or "no replicas configured"
    was = "-" if report.from_version is None else report.from_version
    return (f"{report.action}: {report.model} {report.channel} {was} -> {report.to_version} "
            f"in {report.duration_s:.2f} s ({per})")

"""The signature policy applied to a version: before a promote, a rollback, a canary start and a replica's start
on a channel, and when a version is (re-)signed.

A pipeline is signed as a unit: its version folder (the ensemble config and the manifest that pins the sha256 of
every component's files). Its signature holds only while each component's files still match that manifest, so
both are checked together.

A refusal records a security event, changes nothing else, and raises SignatureError (exit 6) naming the model,
the version, the channel and the check that failed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from controlplane.errors import CheckFailedError, MlctlError, SignatureError
from controlplane.security import events
from controlplane.security.policy import PolicyStore
from controlplane.security.signing import SIGNATURE, Verdict, sign_folder, verify_folder
from controlplane.store.pipelines import component_problems
from controlplane.store.repository import Repository

EVENT_KIND = {"unsigned": events.SIGNATURE_REFUSED, "untrusted_key": events.SIGNATURE_REFUSED,
              "files_changed": events.TAMPERING_DETECTED, "bad_signature": events.TAMPERING_DETECTED}


def fetch_version(repo: Repository, model: str, version: int, into: Path) -> Path:
    """Copy the version folder out of the store (S3 or disk) into `into`, to hash it where it lies."""
    prefix = f"{model}/{version}"
    for rel in repo.store.list_files(prefix):
        (into / rel).parent.mkdir(parents=True, exist_ok=True)
        (into / rel).write_bytes(repo.store.read_bytes(f"{prefix}/{rel}"))
    return into


def is_signed(repo: Repository, model: str, version: int) -> bool:
    return SIGNATURE in repo.store.list_dir(f"{model}/{version}")


def check_version(repo: Repository, model: str, version: int, channel: str, action: str) -> Verdict | None:
    """Apply `channel`'s policy to the version (a pipeline's with its components); None when the policy asks for no
    check. A channel that trusts keys but does not require a signature still refuses a signed version whose
    signature fails."""
    policy = PolicyStore(repo.store).load()[0].channel(channel)
    signed = is_signed(repo, model, version)
    if not policy.require_signature and not (signed and policy.trusted_keys):
        return None
    with tempfile.TemporaryDirectory(prefix="mlctl-verify-") as tmp:
        verdict = verify_folder(fetch_version(repo, model, version, Path(tmp)), policy.trusted())
    if verdict.ok:
        changed = component_problems(repo, repo.manifest(model, version))
        if not changed:
            return verdict
        verdict = Verdict(False, "files_changed", f"a component changed after the pipeline was signed: {'; '.join(changed)}",
                          verdict.fingerprint)
    hint = {"unsigned": f"sign it with 'mlctl sign {model} {version} --key KEY' (a key the channel trusts)",
            "untrusted_key": f"re-sign it with a trusted key, or 'mlctl policy trust {channel} KEY.pub'",
            }.get(verdict.reason, "the version was modified after signing; publish it again from a trusted source")
    raise _refusal(repo, model, version, channel, action, verdict, hint)


def _refusal(repo: Repository, model: str, version: int, channel: str, action: str, verdict: Verdict,
             hint: str) -> SignatureError:
    """Record the security event, and the error that says what was refused and why."""
    try:
        events.record(repo.store, EVENT_KIND[verdict.reason], verdict.reason, model=model, version=version,
                      channel=channel, action=action, detail=verdict.detail)
    except MlctlError as exc:  # the refusal stands; say the count could not be made
        hint += f" (the security event could not be recorded: {exc})"
    where = f" on channel {channel!r}" if channel else ""
    return SignatureError(f"refusing to {action} {model!r} version {version}{where}: {verdict.detail}",
                          reason=verdict.reason, hint=hint)


def sign_version(repo: Repository, model: str, version: int, key: Path, password: str | None = None) -> str:
    """(Re-)sign a published version: its files and manifest stay as they are, only SIGNATURE is replaced, and only
    when the files still match the manifest and any existing signature still holds under a key some channel trusts
    (re-signing must not launder a tampered version). Returns the new signer's fingerprint."""
    problems = repo.verify(model, version)  # NotFoundError for an unknown version
    problems += component_problems(repo, repo.manifest(model, version))
    if problems:
        raise CheckFailedError(f"refusing to sign {model!r} version {version}: its files do not match the manifest "
                               f"({'; '.join(problems)})", hint="publish a new version instead")
    trusted: dict[str, bytes] = {}
    for policy in PolicyStore(repo.store).load()[0].channels.values():
        trusted.update(policy.trusted())
    with tempfile.TemporaryDirectory(prefix="mlctl-sign-") as tmp:
        folder = fetch_version(repo, model, version, Path(tmp))
        if (folder / SIGNATURE).is_file():
            verdict = verify_folder(folder, trusted)
            if not verdict.ok:
                raise _refusal(repo, model, version, "", "re-sign", verdict,
                               "a version is re-signed only while its signature holds under a key a channel trusts")
        fingerprint = sign_folder(folder, key, password)
        repo.store.write_bytes(f"{model}/{version}/{SIGNATURE}", (folder / SIGNATURE).read_bytes())
    return fingerprint


def check_replica(repo: Repository, models: list[str], channel: str) -> None:
    """Before a replica of `channel` starts: every version it will load passes the channel's policy. That is the
    version the channel serves of each model, and every version a pipeline's components allow in their channel
    config (a canary's beside the stable one), checked as the pipeline version it belongs to: a step's code runs
    as soon as Triton loads it."""
    from controlplane.store.channel_store import ChannelStore

    channels = ChannelStore(repo.store)
    checked: set[tuple[str, int]] = set()
    for model in models:
        version = channels.load(model)[0].channels.get(channel)
        if version is not None:
            check_version(repo, model, version, channel, "start a replica serving")
            checked.add((model, version))
    for pipeline, version in sorted(_component_versions(repo, models, channel) - checked):
        check_version(repo, pipeline, version, channel, "start a replica serving")


def _component_versions(repo: Repository, models: list[str], channel: str) -> set[tuple[str, int]]:
    """(pipeline, version) for each version that a pipeline component among `models` allows in its channel config."""
    from controlplane.model import config as model_config
    from controlplane.model import pipeline as pl
    from controlplane.release.pipeline import components_of, config_key

    found: set[tuple[str, int]] = set()
    for model in models:
        pipeline, _, role = model.rpartition(".")
        if not pipeline or role not in (pl.PRE, pl.MODEL, pl.POST) or not repo.has_channel_config(model, channel):
            continue
        key = config_key(model, channel)
        policy = model_config.parse_pbtxt(repo.store.read_bytes(key).decode(), f"{repo.uri}/{key}").version_policy
        if policy.WhichOneof("policy_choice") != "specific":
            continue
        for version in policy.specific.versions:
            try:
                if model in components_of(repo, pipeline, version):
                    found.add((pipeline, version))
            except MlctlError:  # no such pipeline version, or a model: not a component of one
                continue
    return found

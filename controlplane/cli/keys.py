"""`mlctl keys`, `mlctl policy` and `mlctl sign`: signing keys, the repository's signature policy per channel, and
(re-)signing a published version."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from controlplane.cli.render import emit, emit_json, table

keys_app = typer.Typer(help="Signing keys (elliptic-curve, offline).", no_args_is_help=True)
policy_app = typer.Typer(help="The repository's signature policy, per channel.", no_args_is_help=True)
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
PASSWORD_ENV = "MLCTL_SIGNING_KEY_PASSWORD"


@keys_app.command("generate")
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write NAME.key (private) and NAME.pub into.")] = Path("."),
    name: Annotated[str, typer.Option("--name", "-n", help="File name stem of the pair.")] = "mlctl-signing",
    json: Json = False,
) -> None:
    """Make a key pair (NIST P-256); the private key is encrypted when MLCTL_SIGNING_KEY_PASSWORD is set."""
    from controlplane.security.signing import generate_keys

    pair = generate_keys(out, name, os.environ.get(PASSWORD_ENV))
    result = {"private_key": str(pair.private_path), "public_key": str(pair.public_path), "fingerprint": pair.fingerprint}
    if json:
        emit_json(result)
    else:
        emit(f"wrote {pair.private_path} (keep it secret) and {pair.public_path}; fingerprint {pair.fingerprint}")


def _policies(ctx: typer.Context):
    from controlplane.security.policy import PolicyStore
    from controlplane.store import open_store
    from controlplane.store.repository import Repository

    return PolicyStore(Repository(open_store(ctx.obj.repository)).require().store)


def _change(ctx: typer.Context, change) -> None:
    """Read, change and write the policy with compare-and-swap (a concurrent change makes this fail, not vanish)."""
    policies = _policies(ctx)
    policy, token = policies.load()
    policies.save(change(policy), token)


@policy_app.command("show")
def show(ctx: typer.Context, json: Json = False) -> None:
    """Each channel's policy: whether a signature is required, and the keys it trusts."""
    policy, _ = _policies(ctx).load()
    rows = {c: {"require_signature": p.require_signature,
                "trusted_keys": [{"name": k.name, "fingerprint": k.fingerprint} for k in p.trusted_keys]}
            for c, p in sorted(policy.channels.items())}
    if json:
        emit_json({"channels": rows})
        return
    emit(table(["channel", "require signature", "trusted keys"],
               [[c, r["require_signature"], ", ".join(f"{k['name']} ({k['fingerprint'][:16]})" for k in r["trusted_keys"])]
                for c, r in rows.items()]))


@policy_app.command("trust")
def trust(ctx: typer.Context, channel: str, public_key: Annotated[Path, typer.Argument(help="PEM public key (NAME.pub).")],
          name: Annotated[str | None, typer.Option(help="A name for the key [default: the file's stem].")] = None) -> None:
    """Trust a public key for versions served on CHANNEL."""
    from controlplane.errors import NotFoundError

    if not public_key.is_file():
        raise NotFoundError(f"public key {public_key} not found")
    _change(ctx, lambda p: p.trust(channel, public_key.read_bytes(), name or public_key.stem))
    emit(f"channel {channel} trusts {public_key}")


@policy_app.command("untrust")
def untrust(ctx: typer.Context, channel: str, key: Annotated[str, typer.Argument(help="The key's name or fingerprint (a prefix will do).")]) -> None:
    """Stop trusting a key on CHANNEL (versions it signed are refused there from now on)."""
    _change(ctx, lambda p: p.untrust(channel, key))
    emit(f"channel {channel} no longer trusts {key}")


@policy_app.command("require")
def require(ctx: typer.Context, channel: str,
            on: Annotated[bool, typer.Option("--on/--off", help="Require a trusted signature, or stop requiring one.")] = True) -> None:
    """Require (or stop requiring) a signature by a trusted key before a version is served on CHANNEL."""
    _change(ctx, lambda p: p.require(channel, on))
    emit(f"channel {channel} {'requires' if on else 'does not require'} a signature")


def sign(
    ctx: typer.Context,
    model: str,
    version: int,
    key: Annotated[Path, typer.Option("--key", "-k", envvar="MLCTL_SIGNING_KEY", help="EC private key (PEM; password from MLCTL_SIGNING_KEY_PASSWORD).")],
    json: Json = False,
) -> None:
    """Sign (or re-sign, e.g. after a key rotation) a published version; its files stay as they are."""
    from controlplane.security.enforce import sign_version
    from controlplane.store import open_store
    from controlplane.store.repository import Repository

    fingerprint = sign_version(Repository(open_store(ctx.obj.repository)).require(), model, version, key,
                               os.environ.get(PASSWORD_ENV))
    if json:
        emit_json({"model": model, "version": version, "fingerprint": fingerprint})
    else:
        emit(f"signed {model} version {version} with key {fingerprint[:16]}")

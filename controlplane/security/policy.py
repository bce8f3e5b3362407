"""The repository's signature policy, per channel: whether a version must be signed, and by which keys.

    <repo>/.mlctl/security/policy.json
    {"channels": {"production": {"require_signature": true, "trusted_keys": {"<fingerprint>": {"name", "pem"}}}}}

Kept in the repository (a DocumentStore, compare-and-swap) so every replica and operator on local disk or S3 reads
the same policy. A channel without an entry requires nothing. Changes are pure functions of the policy value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from controlplane.errors import NotFoundError, UsageError
from controlplane.security.signing import fingerprint_of
from controlplane.store.base import Store
from controlplane.store.channels import check_channel
from controlplane.store.documents import DocumentStore

POLICY_PREFIX = ".mlctl/security"
POLICY_NAME = "policy"


@dataclass(frozen=True)
class TrustedKey:
    fingerprint: str
    name: str
    pem: str


@dataclass(frozen=True)
class ChannelPolicy:
    require_signature: bool = False
    trusted_keys: tuple[TrustedKey, ...] = ()

    def trusted(self) -> dict[str, bytes]:
        return {key.fingerprint: key.pem.encode() for key in self.trusted_keys}

    def to_dict(self) -> dict:
        return {"require_signature": self.require_signature,
                "trusted_keys": {k.fingerprint: {"name": k.name, "pem": k.pem} for k in self.trusted_keys}}


@dataclass(frozen=True)
class SignaturePolicy:
    channels: dict[str, ChannelPolicy] = field(default_factory=dict)

    def channel(self, channel: str) -> ChannelPolicy:
        return self.channels.get(channel, ChannelPolicy())

    def with_channel(self, channel: str, policy: ChannelPolicy) -> SignaturePolicy:
        return SignaturePolicy({**self.channels, check_channel(channel): policy})

    def require(self, channel: str, required: bool) -> SignaturePolicy:
        current = self.channel(channel)
        if required and not current.trusted_keys:
            raise UsageError(f"channel {channel!r} trusts no key yet, so no version could pass a required signature",
                             hint=f"first run 'mlctl policy trust {channel} KEY.pub'")
        return self.with_channel(channel, replace(current, require_signature=required))

    def trust(self, channel: str, public_pem: bytes, name: str) -> SignaturePolicy:
        current, fingerprint = self.channel(channel), fingerprint_of(public_pem)
        kept = tuple(k for k in current.trusted_keys if k.fingerprint != fingerprint)
        key = TrustedKey(fingerprint, name, public_pem.decode())
        return self.with_channel(channel, replace(current, trusted_keys=kept + (key,)))

    def untrust(self, channel: str, key: str) -> SignaturePolicy:
        """Remove the key named by its fingerprint (or a unique prefix of it) or its name."""
        current = self.channel(channel)
        matches = [k for k in current.trusted_keys if k.fingerprint.startswith(key) or k.name == key]
        if len(matches) != 1:
            known = ", ".join(f"{k.name} ({k.fingerprint[:16]})" for k in current.trusted_keys) or "none"
            raise (NotFoundError if not matches else UsageError)(
                f"key {key!r} names {len(matches)} of channel {channel!r}'s trusted keys (trusted: {known})")
        kept = tuple(k for k in current.trusted_keys if k is not matches[0])
        if current.require_signature and not kept:
            raise UsageError(f"removing key {key!r} would leave channel {channel!r} requiring a signature no key can make",
                             hint=f"trust the new key first, or 'mlctl policy require {channel} --off'")
        return self.with_channel(channel, replace(current, trusted_keys=kept))

    def to_json(self) -> str:
        return json.dumps({"channels": {c: p.to_dict() for c, p in sorted(self.channels.items())}}, indent=1)

    @classmethod
    def from_json(cls, data: bytes, where: str) -> SignaturePolicy:
        try:
            channels = {
                name: ChannelPolicy(bool(entry["require_signature"]), tuple(
                    TrustedKey(fp, str(key["name"]), str(key["pem"])) for fp, key in entry["trusted_keys"].items()))
                for name, entry in json.loads(data)["channels"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"signature policy {where} is not valid: {exc}") from exc
        return cls(channels)


class PolicyStore:
    def __init__(self, store: Store) -> None:
        self.documents = DocumentStore(store, POLICY_PREFIX, parse=SignaturePolicy.from_json,
                                       dump=SignaturePolicy.to_json, name_of=lambda _: POLICY_NAME)

    def load(self) -> tuple[SignaturePolicy, str | None]:
        policy, token = self.documents.load(POLICY_NAME)
        return (policy if policy is not None else SignaturePolicy()), token

    def save(self, policy: SignaturePolicy, token: str | None) -> str:
        """Write only if nobody changed the policy since `token` was read (ConflictError otherwise)."""
        return self.documents.save(policy, token)

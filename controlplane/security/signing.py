"""Sign and verify a version folder with OpenSSF's model-signing (elliptic-curve keys, offline).

The signature is one file in the version folder, SIGNATURE, over every other file there (the model files, the
reference sample and manifest.json), so replacing a model file and recomputing the manifest breaks it. A key is
named by its fingerprint: the sha256 of its PEM public key, which model-signing also writes into the signature as
the signer's hint, so a verifier can tell a key it does not trust from a signature that does not verify.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from controlplane.errors import NotFoundError, UsageError
from controlplane.store.repository import SIGNATURE

CURVE_BITS = 256  # NIST P-256: supported by model-signing and every verifier


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path
    fingerprint: str


@dataclass(frozen=True)
class Verdict:
    """What verifying a signature found: ok, or which check failed (the security event's reason)."""

    ok: bool
    reason: str = ""  # unsigned | untrusted_key | bad_signature | files_changed
    detail: str = ""
    fingerprint: str = ""  # the key that signed, when the signature names one


def fingerprint_of(public_pem: bytes) -> str:
    """The key's name: model-signing's hint for it (sha256 of its PEM SubjectPublicKeyInfo, in hex)."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(public_pem)
    except ValueError as exc:
        raise UsageError(f"not a PEM public key: {exc}") from exc
    canonical = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(canonical).hexdigest()


def generate_keys(directory: Path, name: str, password: str | None = None) -> KeyPair:
    """Write <name>.key (private, mode 0600) and <name>.pub; UsageError rather than overwrite either."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise UsageError(f"{path} exists already", hint="choose another --name or folder")
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                  else serialization.NoEncryption())
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_pem)
    public_path.write_bytes(public_pem)
    return KeyPair(private_path, public_path, fingerprint_of(public_pem))


def _hashing():
    from model_signing import hashing

    # every file counts, git's files included: a version folder has no business holding any
    return hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=False)


def sign_folder(folder: Path, private_key: Path, password: str | None = None) -> str:
    """Write SIGNATURE into `folder`, over every other file in it; returns the signing key's fingerprint."""
    from model_signing import signing

    if not private_key.is_file():
        raise NotFoundError(f"signing key {private_key} not found", hint="make one with 'mlctl keys generate'")
    try:
        config = signing.Config().set_hashing_config(_hashing())
        config.use_elliptic_key_signer(private_key=private_key, password=password).sign(folder, folder / SIGNATURE)
    except (ValueError, TypeError) as exc:  # not a PEM EC private key, a wrong or missing password
        raise UsageError(f"signing key {private_key} cannot sign: {exc}") from exc
    return signer_of((folder / SIGNATURE).read_bytes())


def signer_of(signature: bytes) -> str:
    """The fingerprint the signature names as its signer ('' when it names none or is not a signature)."""
    try:
        bundle = json.loads(signature)
        return str(bundle["verificationMaterial"]["publicKey"]["hint"])
    except (ValueError, KeyError, TypeError):
        return ""


def verify_folder(folder: Path, trusted: dict[str, bytes]) -> Verdict:
    """Check SIGNATURE in `folder` against the trusted public keys ({fingerprint: PEM})."""
    from model_signing import verifying

    path = folder / SIGNATURE
    if not path.is_file():
        return Verdict(False, "unsigned", "the version has no signature")
    signer = signer_of(path.read_bytes())
    if signer not in trusted:
        return Verdict(False, "untrusted_key", f"signed by key {signer[:16] or '(none named)'}, which is not trusted",
                       signer)
    with tempfile.TemporaryDirectory(prefix="mlctl-key-") as tmp:
        public = Path(tmp) / "key.pub"
        public.write_bytes(trusted[signer])
        try:
            verifying.Config().set_hashing_config(_hashing()).use_elliptic_key_verifier(public_key=public).verify(
                folder, path)
        except ValueError as exc:
            if str(exc).startswith("Signature mismatch"):
                return Verdict(False, "files_changed", f"files changed after signing: {_changed(str(exc))}", signer)
            return Verdict(False, "bad_signature", f"the signature does not verify: {exc}", signer)
        except Exception as exc:  # noqa: BLE001 - cryptography's InvalidSignature and protobuf's parse errors
            return Verdict(False, "bad_signature", f"the signature does not verify: {type(exc).__name__} {exc}",
                           signer)
    return Verdict(True, fingerprint=signer)


def _changed(message: str) -> str:
    """model-signing's manifest diff, reduced to the file names and what happened to each."""
    found = [f"{name} (content)" for name in re.findall(r"Hash mismatch for \\?'([^'\\]+)", message)]
    for what, names in re.findall(r"(Extra|Missing) files found in model '[^']*': ([^\]\"]+)", message):
        found += [f"{name.strip()} ({'added' if what == 'Extra' else 'removed'})" for name in names.split(",")]
    found += [f"{name.strip()} (removed)" for names in re.findall(r"Missing files in model '[^']*': ([^\]\"]+)", message)
              for name in names.split(",")]
    return ", ".join(found) or message

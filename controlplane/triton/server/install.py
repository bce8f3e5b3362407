"""Find the tritonserver that the nvidia-pytriton wheel ships, and assemble a backend directory for it.

The backend directory holds Triton's Python backend (library, utils, and the stub built for the running
Python) and the package's Python-based backends `onnxruntime` and `pytorch`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from controlplane.errors import NotFoundError

STANDIN_BACKENDS = ("onnxruntime", "pytorch")


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    python_backend: Path
    stub: Path
    libs: Path

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Process environment for tritonserver: its libraries, and this interpreter's bin/ first on PATH
        (the Python backend stub runs the first python3 on PATH)."""
        env = dict(os.environ if base is None else base)
        libdirs = [str(self.libs), sysconfig.get_config_var("LIBDIR") or ""]
        if env.get("LD_LIBRARY_PATH"):
            libdirs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(d for d in libdirs if d)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env


def locate_triton(binary: str | None = None) -> TritonInstall:
    """The server inside the installed nvidia-pytriton wheel (found without importing pytriton);
    `binary` replaces the wheel's tritonserver executable (the backends still come from the wheel)."""
    spec = importlib.util.find_spec("pytriton")
    hint = "install it with: pip install nvidia-pytriton==0.7.0 (or run 'scripts/quickstart.sh')"
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError("tritonserver not found: the nvidia-pytriton package is not installed", hint=hint)
    package = Path(list(spec.submodule_search_locations)[0])
    root = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=Path(binary) if binary else root / "bin" / "tritonserver",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
        libs=package.parent / "nvidia_pytriton.libs",
    )
    for what, path in [
        ("tritonserver binary", install.binary),
        ("Python backend", install.python_backend / "libtriton_python.so"),
        (f"Python backend stub for Python {version}", install.stub),
        ("server libraries", install.libs),
    ]:
        if not path.exists():
            raise NotFoundError(f"{what} not found at {path}", hint=hint)
    if not os.access(install.binary, os.X_OK):
        raise NotFoundError(f"tritonserver binary at {install.binary} is not executable")
    return install


def assemble_backends(install: TritonInstall, target: Path) -> Path:
    """Write the backend directory under `target` (replacing what was there) and return it."""
    staging = target.with_name(target.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    python = staging / "python"
    python.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(install.python_backend / name, python / name)
    shutil.copy2(install.stub, python / "triton_python_backend_stub")
    package_backends = Path(__file__).resolve().parent.parent / "backends"
    for backend in STANDIN_BACKENDS:
        (staging / backend).mkdir()
        shutil.copy2(package_backends / backend / "model.py", staging / backend / "model.py")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target

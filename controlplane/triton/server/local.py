"""Run the real tritonserver as a managed background process (or the NGC image through Docker).

Explicit model control, latency summaries on, readiness waited for against a deadline, state kept in
a file so that later commands (stop, status, logs) find the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from controlplane.defaults import PORT_RELEASE_TIMEOUT_S
from controlplane.errors import ConflictError, NotFoundError, ServerError
from controlplane.model.provenance import utc_now
from controlplane.readiness import wait_until
from controlplane.store.repository import Repository
from controlplane.triton.server.install import (
    TritonInstall,
    assemble_backends,
    locate_triton,
)
from controlplane.triton.server.options import (
    ServerOptions,
    common_args,
    local_args,
    redact,
)
from controlplane.triton.server.process import (
    is_ready,
    kill_orphaned_stubs,
    log_tail,
    pid_alive,
    port_in_use,
)
from controlplane.triton.server.state import ServerState, StateFiles

Progress = Callable[[str], None]


class LocalServers:
    """Start, stop and inspect tritonserver processes owned by this mlctl home."""

    def __init__(self, home: Path, progress: Progress | None = None) -> None:
        self.files = StateFiles(home)
        self.progress = progress or (lambda _msg: None)

    def running(self, name: str) -> ServerState | None:
        state = self.files.read(name)
        if state is None:
            return None
        if state.runtime == "local" and not pid_alive(state.pid):
            kill_orphaned_stubs(state.pid)  # the server was killed; its backend stubs may linger, holding ports
            self.files.remove(name)
            return None
        return state

    def start(self, options: ServerOptions) -> ServerState:
        existing = self.running(options.name)
        if existing:
            raise ConflictError(
                f"server {options.name!r} is already running (pid {existing.pid}, http {existing.http_url})",
                hint=f"stop it with 'mlctl server stop --name {options.name}' or pick another --name",
            )
        repository = self._repository(options)
        models = self._models_to_load(repository, options)
        if options.channel:  # a replica of a channel serves only what the channel's signature policy admits
            from controlplane.security.enforce import check_replica

            check_replica(repository, models, options.channel)
        for kind, port in options.ports().items():
            try:  # a server that was just killed releases its ports a moment after its pid is gone
                wait_until(lambda p=port: not port_in_use(options.host, p), PORT_RELEASE_TIMEOUT_S, f"{kind} port {port}")
            except TimeoutError:
                raise ConflictError(
                    f"{kind} port {port} on {options.host} is in use",
                    hint=f"pass --{kind}-port with a free port, or stop what holds it",
                ) from None
        log_path = self.files.log_path(options.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.progress(
            f"starting tritonserver {options.name!r} ({options.runtime}) on http {options.http_port}, grpc {options.grpc_port}"
        )
        if options.runtime == "docker":
            state, failed = self._start_docker(options, repository, models, log_path)
        else:
            state, failed = self._start_local(options, repository, models, log_path)
        self.files.write(state)
        try:
            self._wait_ready(state, failed, options.timeout_s)
        except BaseException:
            self._shutdown(state, grace_s=5)
            self.files.remove(options.name)
            raise
        return state

    def _start_local(self, options: ServerOptions, repository: Repository, models: list[str], log_path: Path):
        install = locate_triton(options.binary)
        backend_dir = assemble_backends(install, self.files.work_dir(options.name) / "backends")
        command = [str(install.binary), *local_args(options, repository.store.triton_uri, str(backend_dir), models)]
        pid = self._spawn(install, command, log_path, shown=redact(command, options.control_key))

        def failed() -> str | None:
            return None if pid_alive(pid) else "exited"

        return self._state(options, repository, log_path, redact(command, options.control_key), pid=pid), failed

    def _start_docker(self, options: ServerOptions, repository: Repository, models: list[str], log_path: Path):
        from controlplane.triton.server import docker_runtime as dr

        image = options.image or dr.DEFAULT_IMAGE
        args = common_args(options, models)
        container = dr.start_container(options.name, repository.store.triton_uri, args, options.ports(), image, options.gpus)

        def failed() -> str | None:
            if dr.container_running(container):
                return None
            log_path.write_text(dr.container_logs(container, 200))
            return "container stopped"

        command = redact(["docker", "run", image, "tritonserver", *args], options.control_key)
        return self._state(options, repository, log_path, command, container=container), failed

    @staticmethod
    def _state(options, repository, log_path, command, pid=None, container=None) -> ServerState:
        return ServerState(
            name=options.name,
            runtime=options.runtime,
            pid=pid,
            container=container,
            http_port=options.http_port,
            grpc_port=options.grpc_port,
            metrics_port=options.metrics_port,
            repository=repository.uri,
            log_path=str(log_path),
            started_at=utc_now(),
            command=command,
            channel=options.channel,
            grpc_tls=None if options.tls is None else "mutual" if options.tls.ca else "tls",
        )

    def _shutdown(self, state: ServerState, grace_s: float) -> None:
        if state.runtime == "docker":
            from controlplane.triton.server.docker_runtime import stop_container

            stop_container(state.container, grace_s)
        else:
            self._terminate(state.pid, grace_s)

    def stop(self, name: str, grace_s: float = 30.0, must_exist: bool = False) -> ServerState | None:
        """Stop gracefully (SIGTERM, then SIGKILL after `grace_s`); None when it was not running.
        With `must_exist`, a name this home has never heard of is a NotFoundError (a typo, not a success)."""
        if must_exist and self.files.read(name) is None:
            known = ", ".join(self.files.names()) or "none"
            raise NotFoundError(f"no server named {name!r} in {self.files.dir} (servers: {known})",
                                hint="see 'mlctl server status --name NAME'; names come from 'mlctl server start --name'")
        state = self.running(name)
        if state is None:
            return None
        self._shutdown(state, grace_s)
        self.files.remove(name)
        return state

    def stop_many(self, names, grace_s: float = 30.0) -> list[ServerState]:
        """Stop several servers at once: every local one is sent SIGTERM before any is waited for, so they
        drain and unload side by side (a fleet's stop takes as long as its slowest server, not their sum)."""
        states = [state for state in (self.running(name) for name in names) if state is not None]
        local = [state for state in states if state.runtime != "docker"]
        for state in states:
            if state.runtime == "docker":
                self._shutdown(state, grace_s)
        signalled = [state.pid for state in local if self._signal(state.pid)]
        deadline = time.monotonic() + grace_s
        for pid in signalled:
            self._wait_or_kill(pid, deadline)
        for state in states:
            self.files.remove(state.name)
        return states

    def status(self, name: str) -> dict:
        state = self.running(name)
        if state is None:
            return {"name": name, "running": False}
        return {"running": True, "ready": is_ready(state.http_url), **state.to_dict()}

    def logs(self, name: str, lines: int) -> str:
        state = self.running(name)
        if state is not None and state.runtime == "docker":
            from controlplane.triton.server.docker_runtime import container_logs

            return container_logs(state.container, lines)
        path = self.files.log_path(name)
        if not path.exists():
            raise NotFoundError(f"no log for server {name!r} at {path}", hint="start it with 'mlctl server start'")
        return log_tail(path, lines)

    # --- internals -------------------------------------------------------------------------------
    @staticmethod
    def _repository(options: ServerOptions) -> Repository:
        from controlplane.store import open_store

        repository = Repository(open_store(options.repository)).require()
        repository.ensure_marker()
        return repository

    @staticmethod
    def _models_to_load(repository: Repository, options: ServerOptions) -> list[str]:
        available = repository.model_names()
        if options.channel:  # a channel's replica serves the models promoted to that channel
            available = [m for m in available if repository.has_channel_config(m, options.channel)]
        if options.models is None:
            return available
        unknown = [m for m in options.models if m not in available]
        unpromoted = [m for m in unknown if m in repository.model_names()]
        if unpromoted:
            raise NotFoundError(
                f"model(s) {', '.join(unpromoted)} in repository {repository.uri} have no version promoted to channel "
                f"{options.channel!r} (no configs/{options.channel}.pbtxt), so a replica of that channel has nothing to load",
                hint=f"start the replica without --model (it loads what is promoted to its channel), then run "
                     f"'mlctl promote {unpromoted[0]} VERSION --to {options.channel}'; or start without --channel",
            )
        if unknown:
            raise NotFoundError(
                f"model(s) {', '.join(unknown)} not in repository {repository.uri}",
                hint=f"models there: {', '.join(available) or 'none'}",
            )
        return list(options.models)

    @staticmethod
    def _spawn(install: TritonInstall, command: list[str], log_path: Path, shown: list[str]) -> int:
        """Start tritonserver detached (its own session, re-parented away from us) and return its pid."""
        with open(log_path, "ab") as log:
            log.write(f"\n=== {utc_now()} {' '.join(shown)}\n".encode())
        # sh backgrounds setsid, which execs tritonserver in place: $! is the server's pid, and once sh
        # exits the server is no child of ours (no zombie, no Popen left running when the CLI exits).
        launcher = 'setsid "$0" "$@" >>"$MLCTL_SERVER_LOG" 2>&1 </dev/null & echo $!'
        env = install.environment()
        env["MLCTL_SERVER_LOG"] = str(log_path)
        try:
            result = subprocess.run(
                ["/bin/sh", "-c", launcher, *command], env=env, capture_output=True, text=True, timeout=30, check=True
            )
            return int(result.stdout.strip())
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            raise ServerError(f"could not run {command[0]}: {exc}") from exc

    def _wait_ready(self, state: ServerState, failed: Callable[[], str | None], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            reason = failed()
            if reason:
                raise ServerError(
                    f"tritonserver {state.name!r} {reason} during start-up; "
                    f"last lines of {state.log_path}:\n{log_tail(state.log_path)}"
                )
            if is_ready(state.http_url, timeout=0.5):
                self.progress(f"server {state.name!r} ready")
                return
            time.sleep(0.1)
        raise ServerError(
            f"tritonserver {state.name!r} not ready after {timeout_s:.0f} s; "
            f"last lines of {state.log_path}:\n{log_tail(state.log_path)}"
        )

    @staticmethod
    def _terminate(pid: int | None, grace_s: float) -> None:
        if LocalServers._signal(pid):
            LocalServers._wait_or_kill(pid, time.monotonic() + grace_s)

    @staticmethod
    def _signal(pid: int | None) -> bool:
        """SIGTERM: Triton drains in-flight requests, then exits. False when there was nothing to signal."""
        if not pid_alive(pid):
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True

    @staticmethod
    def _wait_or_kill(pid: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.1)
        try:
            os.killpg(pid, signal.SIGKILL)  # the server and its backend stubs
        except ProcessLookupError:
            pass

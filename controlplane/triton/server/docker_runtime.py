"""The NGC tritonserver image through the Docker SDK: the same repository, served by native backends."""

from __future__ import annotations

from pathlib import Path

from controlplane.errors import ServerError, UnavailableError, UsageError

DEFAULT_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, as the local server
CONTAINER_REPOSITORY = "/models"


def docker_client():
    try:
        import docker
        from docker.errors import DockerException
    except ImportError as exc:
        raise UnavailableError("the docker Python SDK is not installed") from exc
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except DockerException as exc:
        raise UnavailableError(
            f"no Docker engine is reachable ({exc})",
            hint="start Docker, set DOCKER_HOST, or use the default --runtime local",
        ) from exc
    return client


def start_container(name: str, repository: str, args: list[str], ports: dict[str, int], image: str, gpus: bool) -> str:
    """Run tritonserver in a container; returns the container id. `args` exclude the repository flag."""
    if repository.startswith("s3://"):
        volumes, repo_arg = {}, repository
    else:
        path = Path(repository).absolute()
        if not path.is_dir():
            raise UsageError(f"repository {path} is not a folder")
        volumes, repo_arg = {str(path): {"bind": CONTAINER_REPOSITORY, "mode": "ro"}}, CONTAINER_REPOSITORY
    client = docker_client()
    from docker.errors import DockerException
    from docker.types import DeviceRequest

    try:
        container = client.containers.run(
            image,
            command=["tritonserver", f"--model-repository={repo_arg}", *args],
            name=f"mlctl-{name}",
            detach=True,
            ports={"8000/tcp": ports["http"], "8001/tcp": ports["grpc"], "8002/tcp": ports["metrics"]},
            volumes=volumes,
            device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpus else None,
            shm_size="1g",
        )
    except DockerException as exc:
        raise ServerError(f"could not start container from {image}: {exc}") from exc
    return container.id


def container_logs(container_id: str, lines: int) -> str:
    return docker_client().containers.get(container_id).logs(tail=lines).decode(errors="replace")


def container_running(container_id: str) -> bool:
    from docker.errors import NotFound

    try:
        return docker_client().containers.get(container_id).status in ("created", "running")
    except NotFound:
        return False


def stop_container(container_id: str | None, grace_s: float) -> None:
    if not container_id:
        return
    from docker.errors import NotFound

    try:
        container = docker_client().containers.get(container_id)
        container.stop(timeout=int(grace_s))
        container.remove()
    except NotFound:
        pass

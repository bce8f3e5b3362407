# The mlctl control-plane and gateway image. Triton itself runs from the NGC image (docker-compose.yml, k8s/).
# Build:  docker build -t mlctl:latest .
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/mlctl
ENV PATH=/opt/mlctl/bin:$PATH
COPY pyproject.toml README.md ./
COPY controlplane ./controlplane
# torch==2.13.0 is pinned: the CPU build keeps the image small where a CPU wheel index is configured
RUN pip install --no-cache-dir --upgrade pip==24.2 && pip install --no-cache-dir .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 mlctl && useradd --system --uid 10001 --gid mlctl --home-dir /home/mlctl --create-home mlctl
COPY --from=build /opt/mlctl /opt/mlctl
ENV PATH=/opt/mlctl/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLCTL_HOME=/home/mlctl/.mlctl
USER 10001:10001
WORKDIR /home/mlctl
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["mlctl"]
CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8080"]

# The scalewise Prefect runner (deployments/serve.py serves every operation flow), for Kubernetes:
#   docker build -f deployments/kubernetes/worker.Dockerfile -t scalewise/worker .
# In the cluster it talks to the API with its ServiceAccount token (in-cluster config, see rbac.yaml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
COPY src ./src
COPY flows ./flows
COPY tasks ./tasks
COPY deployments/serve.py deployments/triggers.py ./deployments/
RUN pip install -c requirements.lock . \
    && useradd --system --uid 10001 --home-dir /nonexistent scalewise \
    && mkdir -p /etc/scalewise/workloads /var/lib/scalewise \
    && chown 10001 /var/lib/scalewise

ENV SCALEWISE_WORKLOADS=/etc/scalewise/workloads \
    SCALEWISE_STATE=/var/lib/scalewise \
    HOME=/var/lib/scalewise \
    PYTHONPATH=/app

USER 10001
ENTRYPOINT ["python", "deployments/serve.py"]

# The scalewise webhook receiver, built from the repo:
#   docker build -f deployments/webhook.Dockerfile -t scalewise/webhook .
#   docker run -p 8787:8787 \
#     -e PREFECT_API_URL=http://prefect:4200/api \
#     -e SCALEWISE_WEBHOOK_ALERTMANAGER_TOKEN=... -e SCALEWISE_WEBHOOK_CI_SECRET=... \
#     -v $PWD/deployments/webhook.example.yaml:/etc/scalewise/webhook.yaml:ro \
#     -v $PWD/workloads:/etc/scalewise/workloads:ro \
#     scalewise/webhook
# The receiver only creates deployment runs; deployments/serve.py (or a Prefect worker) executes them.
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
# dependencies pinned by the repo's lock file (used as constraints: only what the package needs)
RUN pip install -c requirements.lock . \
    && useradd --system --uid 10001 --home-dir /nonexistent scalewise \
    && mkdir -p /etc/scalewise/workloads /var/lib/scalewise \
    && chown 10001 /var/lib/scalewise

ENV SCALEWISE_WEBHOOK_CONFIG=/etc/scalewise/webhook.yaml \
    SCALEWISE_WORKLOADS=/etc/scalewise/workloads \
    SCALEWISE_STATE=/var/lib/scalewise \
    HOME=/var/lib/scalewise

USER 10001
EXPOSE 8787
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8787/healthz', timeout=2)"]
ENTRYPOINT ["scalewise", "webhook", "--host", "0.0.0.0", "--port", "8787"]

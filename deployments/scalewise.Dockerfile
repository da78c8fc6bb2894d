# The scalewise image: the webhook receiver, the Prefect workers and every flow run they start.
# Built by scripts/build-scalewise-image.sh (no registry: the base is scalewise/debian-base:bookworm,
# imported from debootstrap, and the build context holds a wheelhouse made on the host from
# requirements.lock, so nothing is downloaded here). Layout:
#   /opt/venv        scalewise and its pinned dependencies, bytecode compiled
#   /opt/scalewise   the Prefect project layer (flows/, tasks/, prefect.yaml, deployments/serve.py):
#                    the working directory, SCALEWISE_HOME for prefect.yaml's pull step
# Default command: the webhook receiver on 8787. Workers override it (see README "Images and workers").
ARG BASE=scalewise/debian-base:bookworm

FROM ${BASE} AS build
# Dependencies first (this layer is reused until requirements.lock changes), then scalewise itself.
# --no-index: only the wheelhouse; versions exactly as pinned; pip compiles bytecode as it installs.
COPY deps /tmp/deps
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install -q --no-index --no-deps --no-cache-dir --disable-pip-version-check \
       --find-links /tmp/deps -r /tmp/deps/requirements.txt
COPY scalewise /tmp/scalewise
RUN /opt/venv/bin/pip install -q --no-index --no-deps --no-cache-dir --disable-pip-version-check /tmp/scalewise/*.whl \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall -q -y pip \
    && test -n "$(find /opt/venv/lib/python3*/site-packages/prefect -name '*.pyc' | head -1)" \
    && /opt/venv/bin/python -c "import scalewise, prefect, prefect_docker, prefect_kubernetes"

FROM ${BASE}
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/opt/scalewise \
    SCALEWISE_HOME=/opt/scalewise \
    SCALEWISE_WORKLOADS=/etc/scalewise/workloads \
    SCALEWISE_WEBHOOK_CONFIG=/etc/scalewise/webhook.yaml \
    SCALEWISE_STATE=/var/lib/scalewise \
    HOME=/var/lib/scalewise
COPY --from=build /opt/venv /opt/venv
COPY project /opt/scalewise
RUN python3 -m compileall -q /opt/scalewise \
    && echo 'scalewise:x:10001:10001:scalewise:/var/lib/scalewise:/usr/sbin/nologin' >>/etc/passwd \
    && echo 'scalewise:x:10001:' >>/etc/group \
    && mkdir -p /etc/scalewise/workloads /var/lib/scalewise \
    && chown 10001:10001 /var/lib/scalewise
WORKDIR /opt/scalewise
USER 10001:10001
EXPOSE 8787
# Checks the URL in SCALEWISE_HEALTH_URL (default: the webhook receiver's /healthz); workers started
# with --with-healthcheck set it to their own health endpoint (deployments/healthcheck.py).
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "/opt/scalewise/deployments/healthcheck.py"]
CMD ["scalewise", "webhook", "--host", "0.0.0.0", "--port", "8787"]

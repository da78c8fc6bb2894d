# The stack's infrastructure image: PostgreSQL 15, Redis, Prometheus and Alertmanager from Debian's
# packages, on the debootstrap base (scalewise/debian-base:bookworm, no registry). Built and cached by
# scripts/build-stack-images.sh; deployments/stack.yaml runs one role per service:
#   stack-infra postgres | redis | prometheus | alertmanager
# Every role runs as uid 10001 with its data under /var/lib/scalewise/<role> (a volume).
ARG BASE=scalewise/debian-base:bookworm
FROM ${BASE}
# The packages come from the Debian mirror over apt (signatures checked with the base's keyring);
# no service is started at install and no PostgreSQL cluster is created (the role makes its own).
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
    && mkdir -p /etc/postgresql-common \
    && echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf \
    && apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends \
       postgresql-15 redis-server prometheus prometheus-alertmanager >/dev/null \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && echo 'scalewise:x:10001:10001:scalewise:/var/lib/scalewise:/usr/sbin/nologin' >>/etc/passwd \
    && echo 'scalewise:x:10001:' >>/etc/group \
    && mkdir -p /var/lib/scalewise/postgres /var/lib/scalewise/redis /var/lib/scalewise/prometheus \
       /var/lib/scalewise/alertmanager /run/postgresql \
    && chown -R 10001:10001 /var/lib/scalewise /run/postgresql
COPY infra-entrypoint.sh /usr/local/bin/stack-infra
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
USER 10001:10001
WORKDIR /var/lib/scalewise
ENTRYPOINT ["/usr/local/bin/stack-infra"]

"""A real Kubernetes control plane for tests: etcd + kube-apiserver +
kube-controller-manager + kube-scheduler + KWOK (fake nodes), all on 127.0.0.1.

Binaries are built from Go modules by ``scripts/k8s/build.sh`` (cached under
``${SCALEWISE_CACHE:-~/.cache/scalewise}/k8s/<versions>/bin``).

Usage in tests (``pytest_plugins = ["tests.support.kube"]`` in conftest)::

    def test_something(kube_cluster: ControlPlane) -> None:
        ns = kube_cluster.new_namespace()
        api = kube_cluster.api_client()      # kubernetes.client.ApiClient
        ...

or standalone::

    with ControlPlane(nodes=3) as cp:
        print(cp.kubeconfig, cp.server, cp.token)
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "k8s" / "build.sh"
STAGES_FILE = REPO_ROOT / "scripts" / "k8s" / "kwok-stages.yaml"

SERVICE_CIDR = "10.96.0.0/16"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class ControlPlaneError(RuntimeError):
    """Raised when a component fails to start or the cluster does not become ready."""


def free_port() -> int:
    """Return a currently free TCP port on 127.0.0.1 (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_binaries(timeout: float = 3600.0) -> Path:
    """Run scripts/k8s/build.sh (a no-op when cached) and return the bin directory."""
    env = dict(os.environ)
    if shutil.which("go", path=env.get("PATH")) is None and Path("/usr/local/go/bin/go").exists():
        env["PATH"] = env.get("PATH", "") + os.pathsep + "/usr/local/go/bin"
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise ControlPlaneError(f"scripts/k8s/build.sh failed (rc={proc.returncode}):\n{_tail_text(proc.stderr, 60)}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if not lines:
        raise ControlPlaneError("scripts/k8s/build.sh printed no bin directory")
    bin_dir = Path(lines[-1].strip())
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok"):
        if not (bin_dir / name).is_file():
            raise ControlPlaneError(f"missing binary {bin_dir / name}")
    return bin_dir


def _tail_text(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _tail_file(path: Path, lines: int = 40) -> str:
    try:
        return _tail_text(path.read_text(errors="replace"), lines)
    except OSError:
        return "<no log>"


# --------------------------------------------------------------------------- certs


@dataclass(frozen=True)
class _Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path


def _generate_pki(directory: Path) -> _Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=30)

    def write_key(path: Path, key: Any) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scalewise-test-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    srv_key = ec.generate_private_key(ec.SECP256R1())
    kubernetes_svc_ip = ipaddress.IPv4Network(SERVICE_CIDR)[1]
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(kubernetes_svc_ip),
    ]
    srv_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    pki = _Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )
    pki.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    write_key(pki.ca_key, ca_key)
    pki.serving_cert.write_bytes(srv_cert.public_bytes(serialization.Encoding.PEM))
    write_key(pki.serving_key, srv_key)
    # The controller-manager wants a PKCS#1 "RSA PRIVATE KEY" or PKCS#8; both work.
    write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pki


# ----------------------------------------------------------------------- processes


@dataclass
class _Component:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None

    def start(self) -> None:
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.log_file.write(f"\n===== starting {self.name}: {' '.join(self.argv)}\n".encode())
        self.log_file.flush()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, killed as a whole in stop()
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            # Reap anything left in the group (the components do not fork, but be safe).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.proc = None
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    def failure(self, what: str) -> ControlPlaneError:
        status = ""
        if self.proc is not None and self.proc.poll() is not None:
            status = f" (exited with code {self.proc.returncode})"
        return ControlPlaneError(
            f"{self.name}: {what}{status}; last lines of {self.log_path}:\n{_tail_file(self.log_path)}"
        )


# ---------------------------------------------------------------------- the plane


class ControlPlane:
    """etcd + kube-apiserver + controller-manager + scheduler + KWOK on 127.0.0.1."""

    def __init__(
        self,
        nodes: int = 3,
        workdir: Path | None = None,
        bin_dir: Path | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        self.initial_nodes = nodes
        self.startup_timeout = startup_timeout
        self._bin_dir = bin_dir
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="scalewise-k8s-"))
        self.log_dir = self.workdir / "logs"
        self.token = secrets.token_hex(24)
        self.etcd_port = 0
        self.etcd_peer_port = 0
        self.apiserver_port = 0
        self.kubeconfig = self.workdir / "kubeconfig"
        self.ca_file = self.workdir / "pki" / "ca.crt"
        self.node_names: list[str] = []
        self.timings: dict[str, float] = {}
        self._components: dict[str, _Component] = {}
        self._ssl: ssl.SSLContext | None = None
        self._started = False

    # ------------------------------------------------------------- properties

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = build_binaries()
        return self._bin_dir

    def log_path(self, component: str) -> Path:
        return self.log_dir / f"{component}.log"

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._started:
            return
        t0 = time.monotonic()
        # Safety net for interpreter exit without stop() (e.g. Ctrl-C in a script).
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop(remove_workdir=False)
            raise
        self.timings["start_total"] = time.monotonic() - t0
        self._started = True

    def _start(self) -> None:
        t = time.monotonic()
        bin_dir = self.bin_dir
        self.timings["build"] = time.monotonic() - t

        self.log_dir.mkdir(parents=True, exist_ok=True)
        t = time.monotonic()
        pki = _generate_pki(self.workdir / "pki")
        self.ca_file = pki.ca_cert
        token_file = self.workdir / "tokens.csv"
        token_file.write_text(f'{self.token},admin,admin-uid,"system:masters"\n')
        token_file.chmod(0o600)
        self.etcd_port, self.etcd_peer_port, self.apiserver_port = free_port(), free_port(), free_port()
        self._write_kubeconfig()
        self._ssl = ssl.create_default_context(cafile=str(pki.ca_cert))
        self.timings["pki"] = time.monotonic() - t

        # etcd
        t = time.monotonic()
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._add(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd-data'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",
                "--log-level=warn",
                "--quota-backend-bytes=4294967296",
            ],
        )
        self._wait("etcd", self._etcd_healthy, "etcd /health")
        self.timings["etcd"] = time.monotonic() - t

        # kube-apiserver
        t = time.monotonic()
        self._add("kube-apiserver", self._apiserver_argv(pki, token_file))
        self._wait("kube-apiserver", self._apiserver_ready, "apiserver /readyz")
        self.timings["apiserver"] = time.monotonic() - t

        # controller-manager, scheduler, kwok
        t = time.monotonic()
        cm_port, sched_port = free_port(), free_port()
        self._add(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={cm_port}",
                f"--cert-dir={self.workdir / 'cm-certs'}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--use-service-account-credentials=false",
                "--controllers=*",
                "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--v=1",
            ],
        )
        self._add(
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                f"--cert-dir={self.workdir / 'sched-certs'}",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--v=1",
            ],
        )
        self._add(
            "kwok",
            [
                str(bin_dir / "kwok"),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={STAGES_FILE}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                # Node leases keep the fake nodes' heartbeats fresh; without them the controller-manager
                # marks every node NotReady ~50 s after start and the pods never become Ready again.
                "--node-lease-duration-seconds=40",
                "--node-ip=10.255.0.1",
                "--cidr=10.0.0.0/16",
            ],
        )
        self.add_nodes(self.initial_nodes, wait=False)
        self._wait_all(self._nodes_ready, f"{len(self.node_names)} nodes Ready")
        self._wait_all(
            lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
            "default ServiceAccount in namespace default",
        )
        self.timings["components_and_nodes"] = time.monotonic() - t

    def stop(self, remove_workdir: bool = True) -> None:
        """Stop all components (reverse start order); optionally delete the work dir."""
        atexit.unregister(self.stop)
        for name in reversed(list(self._components)):
            self._components[name].stop()
        self._components.clear()
        self._started = False
        if remove_workdir and self._own_workdir and os.environ.get("SCALEWISE_KEEP_K8S") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart_apiserver(self, downtime: float = 0.0, grace: float = 3.0) -> None:
        """Stop the apiserver, stay down ``downtime`` seconds, start it again on the
        same port and wait for /readyz.

        The apiserver is sent SIGTERM and SIGKILLed after ``grace`` seconds: with
        clients holding watches open its graceful shutdown can take well over 10s.
        """
        comp = self._components["kube-apiserver"]
        comp.stop(grace=grace)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self._port_free(self.apiserver_port):
            time.sleep(0.1)
        if downtime > 0:
            time.sleep(downtime)
        comp.start()
        self._wait("kube-apiserver", self._apiserver_ready, "apiserver /readyz after restart")

    def is_running(self, component: str) -> bool:
        comp = self._components.get(component)
        return comp is not None and comp.running()

    # ------------------------------------------------------------- cluster ops

    def add_nodes(self, count: int, wait: bool = True, prefix: str = "kwok-node") -> list[str]:
        """Create ``count`` fake Nodes managed by KWOK; optionally wait until Ready."""
        names: list[str] = []
        for _ in range(count):
            name = f"{prefix}-{len(self.node_names)}"
            self._request("POST", "/api/v1/nodes", _node_manifest(name))
            self.node_names.append(name)
            names.append(name)
        if wait:
            self._wait_all(self._nodes_ready, f"{len(self.node_names)} nodes Ready")
        return names

    def new_namespace(self, prefix: str = "t", labels: dict[str, str] | None = None) -> str:
        """Create a uniquely named namespace and wait for its default ServiceAccount."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
        self._request("POST", "/api/v1/namespaces", body)
        sa_path = f"/api/v1/namespaces/{name}/serviceaccounts/default"
        try:
            self._wait_all(lambda: self._get(sa_path) is not None, f"default ServiceAccount in {name}", timeout=20.0)
        except ControlPlaneError:
            # After an apiserver restart the controller-manager's ServiceAccount controller can take
            # over a minute to resume its watches (seen in CI). Creating `default` is what it would do;
            # it accepts an existing one.
            status, payload = self._raw(
                "POST", f"/api/v1/namespaces/{name}/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}},
            )
            if status >= 300 and status != 409:
                msg = f"creating the default ServiceAccount in {name}: HTTP {status}: {payload[:300]!r}"
                raise ControlPlaneError(msg) from None
            self._wait_all(lambda: self._get(sa_path) is not None, f"default ServiceAccount in {name}", timeout=30.0)
        return name

    def delete_namespace(self, name: str) -> None:
        with contextlib.suppress(ControlPlaneError):
            self._request("DELETE", f"/api/v1/namespaces/{name}")

    def api_client(self) -> ApiClient:
        """A kubernetes.client.ApiClient for the admin user (via the kubeconfig)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def env(self) -> dict[str, str]:
        """Environment variables pointing clients at this cluster."""
        return {"KUBECONFIG": str(self.kubeconfig)}

    # ---------------------------------------------------------------- helpers

    def _apiserver_argv(self, pki: _Pki, token_file: Path) -> list[str]:
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--token-auth-file={token_file}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--api-audiences=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # 127.0.0.1 is not a valid endpoint address for the `kubernetes` Service.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
            "--max-requests-inflight=800",
            "--max-mutating-requests-inflight=400",
            "--v=1",
        ]

    def _write_kubeconfig(self) -> None:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "scalewise-test",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "scalewise-test", "context": {"cluster": "scalewise-test", "user": "admin"}}],
            "current-context": "scalewise-test",
        }
        # JSON is valid YAML, so no YAML dependency is needed here.
        self.kubeconfig.write_text(json.dumps(cfg, indent=2))
        self.kubeconfig.chmod(0o600)

    def _add(self, name: str, argv: list[str]) -> None:
        comp = _Component(name=name, argv=argv, log_path=self.log_path(name))
        self._components[name] = comp
        comp.start()

    def _wait(self, name: str, probe: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        """Wait for ``probe`` while checking that component ``name`` stays alive."""
        comp = self._components[name]
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        while True:
            if not comp.running():
                raise comp.failure(f"exited while waiting for {what}")
            if probe():
                return
            if time.monotonic() > deadline:
                raise comp.failure(f"timed out waiting for {what}")
            time.sleep(0.1)

    def _wait_all(self, probe: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        """Wait for ``probe`` while checking that every component stays alive."""
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        while True:
            for comp in self._components.values():
                if not comp.running():
                    raise comp.failure(f"exited while waiting for {what}")
            if probe():
                return
            if time.monotonic() > deadline:
                tails = "\n".join(
                    f"--- {c.name} ({c.log_path}):\n{_tail_file(c.log_path, 15)}"
                    for c in self._components.values()
                    if c.name != "etcd"
                )
                raise ControlPlaneError(f"timed out waiting for {what}\n{tails}")
            time.sleep(0.2)

    @staticmethod
    def _port_free(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.etcd_port}/health", timeout=2) as r:
                return bool(json.loads(r.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _apiserver_ready(self) -> bool:
        try:
            status, _ = self._raw("GET", "/readyz", None, timeout=2)
        except OSError:
            return False
        return status == 200

    def _nodes_ready(self) -> bool:
        data = self._get("/api/v1/nodes")
        if data is None:
            return False
        ready = set()
        for item in data.get("items", []):
            for cond in item.get("status", {}).get("conditions", []) or []:
                if cond.get("type") == "Ready" and cond.get("status") == "True":
                    ready.add(item["metadata"]["name"])
        return all(n in ready for n in self.node_names)

    def _raw(self, method: str, path: str, body: Any, timeout: float = 10) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl) as r:
                return int(r.status), r.read()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read()

    def _get(self, path: str) -> dict[str, Any] | None:
        try:
            status, payload = self._raw("GET", path, None)
        except OSError:
            return None
        if status != 200:
            return None
        result: dict[str, Any] = json.loads(payload)
        return result

    def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        status, payload = self._raw(method, path, body)
        if status >= 300:
            raise ControlPlaneError(f"{method} {path} -> HTTP {status}: {payload[:500]!r}")
        result: dict[str, Any] = json.loads(payload) if payload else {}
        return result


def _node_manifest(name: str) -> dict[str, Any]:
    resources = {"cpu": "1000", "memory": "4Ti", "pods": "1000", "ephemeral-storage": "10Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "spec": {},
        "status": {"allocatable": dict(resources), "capacity": dict(resources)},
    }


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[ControlPlane]:
    """Session-wide real control plane (etcd, apiserver, controller-manager, scheduler, KWOK)."""
    cp = ControlPlane(nodes=int(os.environ.get("SCALEWISE_K8S_NODES", "3")))
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()

"""The embedded default: a local Prefect server on PostgreSQL (or SQLite), started on demand.

The database is a PostgreSQL cluster of its own under ``<home>/postgres`` (Debian's ``postgresql``
package provides the binaries; ``scripts/install-system.sh`` installs it), listening on 127.0.0.1
only, with a generated password kept in ``<home>/postgres.secret`` (mode 0600) and never logged.
``SCALEWISE_DATABASE=sqlite`` switches back to Prefect's SQLite file (slower: writes contend for one
file lock and the server answers "database is locked" 503s under load).

The server is started with filesystem lease storage for concurrency limits: with the default
in-memory lease storage a server restart leaks every held per-workload lock forever and crashes
the holder (seen on prefect 3.9.1).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
Database = Literal["postgres", "sqlite"]
PG_USER = "prefect"
PG_DB = "prefect"


def database_kind() -> Database:
    value = os.environ.get("SCALEWISE_DATABASE", "postgres").strip().lower() or "postgres"
    if value not in ("postgres", "sqlite"):
        raise ValueError(f"SCALEWISE_DATABASE: must be 'postgres' or 'sqlite', not {value!r}")
    return "postgres" if value == "postgres" else "sqlite"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- PostgreSQL ----------------------------------------------------------------------------------


def pg_bindir() -> Path:
    """Where Debian's PostgreSQL server binaries are (the newest installed major version)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError("PostgreSQL is not installed: run scripts/install-system.sh (Debian's postgresql package)")


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster of scalewise's own under ``data_dir`` (loopback only)."""

    data_dir: Path
    secret_file: Path

    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(pg_bindir() / args[0]), *args[1:]]
        if self._as_root:  # PostgreSQL refuses to run as root: run it as Debian's `postgres` user
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def write_settings(self, password: str, port: int) -> None:
        """Keep the cluster's password and port in ``secret_file`` (mode 0600)."""
        self.secret_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"password": password, "port": port}, out)

    def _settings(self) -> dict[str, str | int]:
        return dict(json.loads(self.secret_file.read_text()))

    def url(self) -> str:
        s = self._settings()
        return f"postgresql+asyncpg://{PG_USER}:{s['password']}@127.0.0.1:{s['port']}/{PG_DB}"

    def running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def _prepare_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        if not self._as_root:
            return
        owner = pwd.getpwnam("postgres")
        os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
        # the postgres user must be able to reach its data directory: add search (x) to the parents
        for parent in self.data_dir.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                os.chmod(parent, mode | stat.S_IXOTH)

    def _init(self) -> None:
        self._prepare_dir()
        password = secrets.token_urlsafe(24)
        self.write_settings(password, free_port())
        pwfile = self.data_dir.parent / f".pw-{os.getpid()}"
        pwfile.write_text(password + "\n")
        try:
            if self._as_root:
                owner = pwd.getpwnam("postgres")
                os.chown(pwfile, owner.pw_uid, owner.pw_gid)
            os.chmod(pwfile, 0o600)
            self._run(
                "initdb", "-D", str(self.data_dir), "-U", PG_USER, "--pwfile", str(pwfile),
                "--auth=scram-sha-256", "--encoding=UTF8", "--no-instructions",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as out:
            out.write(
                "\n# scalewise: loopback only, sized for a small local control plane\n"
                f"listen_addresses = '127.0.0.1'\nunix_socket_directories = '{self.data_dir}'\n"
                "max_connections = 200\nshared_buffers = 128MB\nfsync = on\nsynchronous_commit = off\n"
            )

    def start(self, timeout_s: float = 180.0) -> str:
        """Start the cluster if it is not running (initialising it the first time); return the URL."""
        if not (self.data_dir / "PG_VERSION").exists() or not self.secret_file.exists():
            if self.data_dir.exists():
                shutil.rmtree(self.data_dir)
            self._init()
        else:
            self._prepare_dir()
        if not self.running():
            port = str(self._settings()["port"])
            log = self.data_dir / "postgres.log"
            proc = self._run(
                "pg_ctl", "start", "-D", str(self.data_dir), "-l", str(log), "-w", "-t", str(int(timeout_s)),
                "-o", f"-p {port}", check=False,
            )
            if proc.returncode != 0:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else proc.stderr
                raise RuntimeError(f"PostgreSQL did not start in {self.data_dir}:\n{tail}")
        self._ensure_database()
        return self.url()

    def _ensure_database(self) -> None:
        port = str(self._settings()["port"])
        env = dict(os.environ, PGPASSWORD=str(self._settings()["password"]))
        base = [str(pg_bindir() / "psql"), "-h", "127.0.0.1", "-p", port, "-U", PG_USER, "-d", "postgres", "-tAc"]
        have = subprocess.run([*base, f"SELECT 1 FROM pg_database WHERE datname = '{PG_DB}'"],
                              env=env, capture_output=True, text=True, timeout=60)
        if have.returncode != 0:
            raise RuntimeError(f"cannot connect to PostgreSQL on 127.0.0.1:{port}: {have.stderr.strip()}")
        if have.stdout.strip() != "1":
            subprocess.run([*base, f"CREATE DATABASE {PG_DB}"], env=env, check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", check=False)


def local_postgres(home: Path) -> LocalPostgres:
    return LocalPostgres(data_dir=home / "postgres", secret_file=home / "postgres.secret")


# --- the Prefect server ------------------------------------------------------------------------------


def server_env(home: Path, port: int, database_url: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE,
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        }
    )
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
        # Prefect's defaults (5 + 10 pooled connections, 5 s to connect, 10 s statement timeout) answer
        # 500 under bursts on a loaded 2-core machine; the cluster allows 200 connections.
        env.setdefault("PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE", "20")
        env.setdefault("PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW", "20")
        env.setdefault("PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_TIMEOUT", "60")
        env.setdefault("PREFECT_SERVER_DATABASE_CONNECTION_TIMEOUT", "30")
        env.setdefault("PREFECT_SERVER_DATABASE_TIMEOUT", "60")
    else:
        env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    env.pop("PREFECT_API_URL", None)
    return env


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class LocalServer:
    api_url: str
    home: Path
    process: subprocess.Popen[bytes] | None
    log_file: Path
    database: Database = "sqlite"
    db_home: Path | None = None

    def stop(self) -> None:
        """Stop the Prefect server (the database keeps running: see :meth:`stop_database`)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop_database(self) -> None:
        if self.database == "postgres":
            local_postgres(self.db_home or self.home).stop()


def start_server(
    home: Path,
    port: int = 4200,
    timeout_s: float = 300.0,  # a loaded 2-core machine took 147-256 s
    database: Database | None = None,
    db_home: Path | None = None,
) -> LocalServer:
    """Start ``prefect server start`` on 127.0.0.1:``port`` with its state under ``home``.

    The database is PostgreSQL under ``db_home/postgres`` (default ``home``; started if needed), or
    SQLite with ``database="sqlite"`` (default: ``SCALEWISE_DATABASE``). Returns at once if a healthy
    server already answers there.
    """
    kind = database or database_kind()
    api_url = f"http://127.0.0.1:{port}/api"
    home.mkdir(parents=True, exist_ok=True)
    log_file = home / "server.log"
    db_home = db_home or home
    if healthy(api_url):
        return LocalServer(api_url, home, None, log_file, kind, db_home)
    db_url = local_postgres(db_home).start() if kind == "postgres" else None
    prefect = Path(sys.executable).with_name("prefect")
    cmd = [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            cmd, env=server_env(home, port, db_url), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_file.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"prefect server exited with {proc.returncode}:\n{tail}")
        if healthy(api_url, timeout=1.0):
            return LocalServer(api_url, home, proc, log_file, kind, db_home)
        time.sleep(0.3)
    server = LocalServer(api_url, home, proc, log_file, kind, db_home)
    server.stop()
    raise RuntimeError(f"prefect server did not become healthy within {timeout_s:.0f}s; see {log_file}")

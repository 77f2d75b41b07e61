"""A throw-away PostgreSQL server for tests: a real cluster made by `initdb` in a temp folder,
run by `pg_ctl` with no TCP listener (its one socket lives in that folder), gone after `stop`.

Why a real server and not a mock: what the PostgreSQL store must prove — `FOR UPDATE SKIP
LOCKED` claims racing across processes, `NOTIFY` delivered at commit, a restart dropping every
connection — only a real server does. Made for speed, not safety: `fsync=off`, trust auth, the C
locale (about 1.5 s from nothing to a database).

Debian installs the binaries under /usr/lib/postgresql/<version>/bin, which is not on every
PATH; both places are searched. PostgreSQL refuses to run as root, so under root (CI
containers) the server runs as the `postgres` account the package creates (or `nobody`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "tmuxagent"
DEFAULT_DB = "postgres"  # initdb makes it: no CREATE DATABASE at start
_SERVER_ACCOUNTS = ("postgres", "nobody")  # who runs the server when the tests run as root


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries here: says what to install."""


def find_bin_dir() -> Path:
    """The folder holding `initdb` and `pg_ctl`: PATH first, then Debian's newest version."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "pg_ctl").exists()]
    if not candidates:
        raise PostgresUnavailable(
            "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin — "
            "install the `postgresql` package (.ci/run does)"
        )

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in path.parent.name.split(".") if part.isdigit())

    return max(candidates, key=version)


def _free_port() -> int:
    """A port number nobody listens on. The server opens no TCP socket, but the number names its
    unix socket and shows in every DSN, so one that is free on this host avoids any confusion."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None (this one) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in _SERVER_ACCOUNTS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and no `postgres` or `nobody` account to run PostgreSQL as")


@dataclass
class PostgresServer:
    """One cluster: `start()` makes and starts it, `dsn()` names a database, `restart()` drops
    every connection (as a real server restart does), `stop()` removes it all."""

    bin_dir: Path = field(default_factory=find_bin_dir)
    root: Path | None = None
    port: int = field(default_factory=_free_port)
    durable: bool = False  # fsync and synchronous commit on, as a real server (for benchmarks)
    _account: pwd.struct_passwd | None = field(default=None, init=False)

    @property
    def data_dir(self) -> Path:
        return self._root / "data"

    @property
    def socket_dir(self) -> Path:
        return self._root

    @property
    def _root(self) -> Path:
        if self.root is None:
            raise RuntimeError("the PostgreSQL server is not started")
        return self.root

    def _run(self, *args: str) -> None:
        account = self._account
        done = subprocess.run(
            args,
            cwd=self._root,
            capture_output=True,
            text=True,
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None,
            env={**os.environ, "LC_ALL": "C"},
            timeout=60,
        )
        if done.returncode != 0:
            log = self._root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")

    def start(self) -> PostgresServer:
        """Make the cluster (once) and start it; its `postgres` database is ready at once."""
        if self.root is None:
            self._account = _server_account()
            # short and in /tmp: a unix socket path must stay under 108 bytes
            self.root = Path(tempfile.mkdtemp(prefix="tmuxagent-pg-", dir="/tmp"))
            if self._account is not None:
                os.chown(self.root, self._account.pw_uid, self._account.pw_gid)
            self._copy_template()
        self._ctl("start", "-o", self._server_options(), "-l", str(self._root / "server.log"))
        return self

    def _copy_template(self) -> None:
        """The data folder, copied from a cluster `initdb` made once per PostgreSQL build and
        account (initdb is most of a start; a copy takes a tenth of it). Made under a lock, so
        xdist workers starting together run initdb once between them."""
        build = self.bin_dir / "postgres"
        key = f"{build.resolve()}:{build.stat().st_mtime_ns}:{os.geteuid()}:{SUPERUSER}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        template = Path(tempfile.gettempdir()) / f"tmuxagent-pg-template-{digest}"
        with open(f"{template}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (template / "PG_VERSION").exists():
                shutil.rmtree(template, ignore_errors=True)
                building = self._root / "template"
                self._run(
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(building),
                    "--auth=trust",
                    f"--username={SUPERUSER}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                )
                partial = template.with_name(template.name + ".partial")  # never a half-copied template
                shutil.rmtree(partial, ignore_errors=True)
                subprocess.run(["cp", "-a", str(building), str(partial)], check=True)
                os.rename(partial, template)
                shutil.rmtree(building)
        subprocess.run(["cp", "-a", str(template), str(self.data_dir)], check=True)

    def _server_options(self) -> str:
        sync = "on" if self.durable else "off"
        return (
            f"-p {self.port} -c listen_addresses='' -c unix_socket_directories={self.socket_dir} "
            f"-c fsync={sync} -c synchronous_commit={sync} -c full_page_writes={sync} -c max_connections=60"
        )

    def _ctl(self, action: str, *args: str) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-w", "-s", "-t", "30", action, *args)

    def dsn(self, dbname: str = DEFAULT_DB, schema: str | None = None) -> str:
        """A libpq DSN; with `schema`, its tables are made and found there (`search_path`)."""
        options = f" options=-csearch_path={schema}" if schema else ""
        return f"host={self.socket_dir} port={self.port} user={SUPERUSER} dbname={dbname}{options}"

    @property
    def socket_file(self) -> Path:
        """The server's one socket (libpq finds it as `host=FOLDER port=PORT`)."""
        return self.socket_dir / f".s.PGSQL.{self.port}"

    def routed(self, dsn: str, folder: Path) -> str:
        """`dsn`, connecting through `folder` instead (where a `SocketGate` listens on a socket of
        the server's socket's name): one client's link to the server, which a test can cut."""
        return dsn.replace(f"host={self.socket_dir} ", f"host={folder} ", 1)

    def _admin(self, statement: str, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL(statement).format(sql.Identifier(name)))

    def create_schema(self, name: str) -> str:
        """A new empty schema of the default database (a few milliseconds, where a database
        costs a CREATE DATABASE): the DSN of a store that lives in it alone."""
        self._admin("CREATE SCHEMA {}", name)
        return self.dsn(schema=name)

    def create_database(self, name: str) -> str:
        """A new empty database (its own NOTIFY channels too): its DSN."""
        self._admin("CREATE DATABASE {}", name)
        return self.dsn(name)

    def restart(self) -> None:
        """Stop at once (`-m fast`: every client connection is cut) and start again."""
        self._ctl("stop", "-m", "fast")
        self._ctl("start", "-o", self._server_options(), "-l", str(self._root / "server.log"))

    def stop(self) -> None:
        """Stop the server and remove its folder; safe to call twice."""
        if self.root is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._ctl("stop", "-m", "immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""A throwaway PostgreSQL server on loopback, for the tests and the benchmark.

It uses the server binaries of the machine (Debian's ``/usr/lib/postgresql/*/bin``, or
``pg_ctl`` on ``PATH``). PostgreSQL refuses to run as root, so when we are root the
server runs as the ``postgres`` user (or ``nobody``) from a data directory it owns.
The server listens on 127.0.0.1 on a free port and requires a password (SCRAM), so the
tests can check that it never leaks.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["PgServer", "find_bindir"]


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (newest Debian version first)."""
    env = os.environ.get("STET_PG_BINDIR")
    if env:
        return Path(env) if (Path(env) / "pg_ctl").exists() else None
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl and shutil.which("initdb"):
        return Path(pg_ctl).parent
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One server in a temporary directory; :meth:`stop` removes everything."""

    def __init__(self, bindir: Path, *, fsync: bool = False) -> None:
        self.bindir = bindir
        self.port = _free_port()
        self.user = "stet_user"
        self.password = "pw-" + secrets.token_hex(8) + "-SECRET"
        self.dbname = "stet_test"
        # In /tmp: the server's user must reach it (TMPDIR may sit under a private home),
        # and the socket's path must stay short.
        self.root = Path(tempfile.mkdtemp(prefix="stet-pg-",
                                          dir="/tmp" if os.path.isdir("/tmp") else None))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._run_as: dict[str, Any] = {}
        try:
            self._setup(fsync)
        except BaseException:
            self.close()
            raise

    def _setup(self, fsync: bool) -> None:
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pw = pwd.getpwnam("nobody")
            self._run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o700)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._run_as:
            os.chown(pwfile, self._run_as["user"], self._run_as["group"])
        self._pg("initdb", "-D", str(self.data), "-U", "stet_admin", f"--pwfile={pwfile}",
                 "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                 "--no-locale", "--no-sync")
        pwfile.unlink()
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                f"max_connections = 200\nfsync = {'on' if fsync else 'off'}\n"
                "full_page_writes = off\nshared_buffers = 64MB\n"
            )
        self.start()
        self._pg("psql", "-h", str(self.root), "-p", str(self.port), "-U", "stet_admin",
                 "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q",
                 "-c", f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'",
                 "-c", f"CREATE DATABASE {self.dbname} OWNER {self.user}")

    def _pg(self, tool: str, *args: str) -> None:
        res = subprocess.run([str(self.bindir / tool), *args], capture_output=True,
                             text=True, cwd=self.root, check=False, **self._run_as)
        if res.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({res.returncode}): {res.stderr}\n{log}")

    def url(self, table: str | None = None, *, password: str | None = None) -> str:
        pw = self.password if password is None else password
        url = f"postgresql://{self.user}:{quote(pw, safe='')}@127.0.0.1:{self.port}/{self.dbname}"
        return url + (f"?table={quote(table, safe='')}" if table is not None else "")

    def start(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                 "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60",
                 "-l", str(self.log), "restart")

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        for _ in range(50):
            try:
                shutil.rmtree(self.root)
                return
            except OSError:
                time.sleep(0.1)

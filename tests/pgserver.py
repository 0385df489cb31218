"""A throwaway PostgreSQL server for tests and benchmarks: initdb into a temporary folder, start it
on 127.0.0.1 with a free port (unix socket in the same folder), stop and delete it at the end.

The binaries come from the machine's packages (Debian: ``apt-get install -y postgresql``, which
``.ci/run`` does) under ``/usr/lib/postgresql/<version>/bin``. ``initdb`` refuses to run as root, so
as root the server runs as the unprivileged ``postgres`` user the package creates (``runuser``).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

INSTALL_HINT = "install the PostgreSQL server: apt-get update && apt-get install -y postgresql (.ci/run does this)"


class PostgresUnavailable(RuntimeError):
    """The server binaries are missing or the server did not start; the message says why."""


def find_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` holding initdb and pg_ctl (or PG_BIN_DIR, or PATH)."""
    env = os.environ.get("PG_BIN_DIR")
    candidates = [env] if env else []

    def version(p: str) -> tuple:
        return tuple(int(x) for x in re.findall(r"\d+", Path(p).parent.name)) or (0,)

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).parent))
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin, "
        f"$PG_BIN_DIR or PATH; {INSTALL_HINT}"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowawayPostgres:
    """``with ThrowawayPostgres() as pg: pg.url`` -- a running server, gone afterwards.

    ``settings`` are extra ``-c name=value`` server options (the defaults keep PostgreSQL's
    durability: fsync and synchronous_commit on).
    """

    def __init__(self, settings: dict | None = None) -> None:
        self.settings = {"max_connections": "100", "shared_buffers": "64MB", **(settings or {})}
        self.bin = find_bin_dir()
        self.root: Path | None = None
        self.port: int | None = None
        self.user = "persona"
        self._as_root = os.geteuid() == 0 if hasattr(os, "geteuid") else False

    def _cmd(self, *args) -> list[str]:
        if self._as_root:
            return ["runuser", "-u", "postgres", "--", *args]
        return list(args)

    def _run(self, *args, timeout: float = 120) -> None:
        r = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout)
        if r.returncode:
            log = ""
            if self.root is not None and (self.root / "server.log").exists():
                log = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise PostgresUnavailable(f"{' '.join(args[:2])} failed ({r.returncode}): {r.stderr.strip()} {log}")

    def start(self) -> "ThrowawayPostgres":
        if self._as_root:
            try:
                import pwd

                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root, and initdb refuses root, but there is no 'postgres' user to run it as; "
                    + INSTALL_HINT
                ) from None
        # /tmp itself, not pytest's per-user tmp (mode 0700): the postgres user must reach the folder
        self.root = Path(tempfile.mkdtemp(prefix="persona-pg-"))
        if self._as_root:
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        data = self.root / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", self.user, "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        opts = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        for attempt in range(5):
            self.port = _free_port()
            try:
                self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.root / "server.log"), "-w",
                          "-t", "60", "-o",
                          f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} {opts}", "start")
                break
            except PostgresUnavailable:
                if attempt == 4:
                    raise
                time.sleep(0.2)
        return self

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop",
                      timeout=60)
        except (PostgresUnavailable, subprocess.TimeoutExpired):
            pass
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> "ThrowawayPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

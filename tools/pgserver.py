"""A throwaway PostgreSQL server for tests and benchmarks: the machine's own binaries (initdb, pg_ctl),
a data directory of its own, a Unix socket only (no TCP port to clash with), fsync off. Asked to, it also
listens on one address, trusting one network (a test's own hosts, in network namespaces it made), and runs
under a command prefix (`ip netns exec NAME`: in that namespace).

PostgreSQL refuses to run as root; under root the server runs as the `postgres` account.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def find_binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise PostgresUnavailable(f"{name} not found: install PostgreSQL (initdb and pg_ctl) to use it here")
    return found


class LocalPostgres:
    def __init__(self, port: int = 55432, user: str = "mesh", listen: str = "", trusted: str = "",
                 run_in: Sequence[str] = ()) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mesh-pg-"))  # short: the socket path must fit 107 bytes
        self.data = self.root / "data"
        self.port = port
        self.user = user
        self.listen, self.trusted, self.run_in = listen, trusted, list(run_in)  # tcp address, network it trusts
        self.run_as = None
        if os.geteuid() == 0:
            try:
                self.run_as = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root and there is no postgres account to run the server as") from None

    def _run(self, *args: str) -> None:
        command = list(args)
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as.pw_name, "--", *command]
        command = [*self.run_in, *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise PostgresUnavailable(f"{Path(args[0]).name} failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> LocalPostgres:
        if self.run_as is not None:
            os.chown(self.root, self.run_as.pw_uid, self.run_as.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self._run(find_binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8",
                      "--no-sync", "--no-instructions")
            if self.trusted:
                with open(self.data / "pg_hba.conf", "a") as hba:
                    hba.write(f"host all all {self.trusted} trust\n")
        options = (f"-k {self.root} -c listen_addresses='{self.listen}' -p {self.port} -c fsync=off "
                   "-c max_connections=200")
        self._run(find_binary("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"),
                  "-w", "-t", "60", "start")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{database}?host={self.root}&port={self.port}"

    def tcp_url(self, database: str = "postgres") -> str:
        """The database at the address the server listens on (`listen`)."""
        return f"postgresql://{self.user}@{self.listen}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(find_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

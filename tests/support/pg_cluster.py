"""A private, throwaway PostgreSQL cluster that a test may stop and start (the shared test
server must never be stopped). Needs Debian's postgresql binaries; run as root, the server
runs as the postgres user, as in scripts/start-postgres."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.databases import require


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Cluster:
    def __init__(self, bin_dir: Path, root: Path, port: int) -> None:
        self.bin_dir, self.root, self.port = bin_dir, root, port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd="/tmp", timeout=120)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.root / "data"), "-U", "postgres", "-A", "trust",
                  "--no-sync")  # fmt: skip

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-w",
                  "-o", options, "start")  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")


@contextlib.contextmanager
def private_cluster() -> Iterator[Cluster]:
    bin_dir = _binaries()
    require(bin_dir is not None, "a private PostgreSQL needs Debian's postgresql package")
    require(
        os.geteuid() == 0 and shutil.which("runuser") is not None,
        "a private PostgreSQL needs root (the server runs as the postgres user)",
    )
    assert bin_dir is not None
    root = Path(tempfile.mkdtemp(prefix="cdk-pg-"))
    shutil.chown(root, "postgres", "postgres")
    cluster = Cluster(bin_dir, root, _free_port())
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)

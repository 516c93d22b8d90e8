"""Object storage stand-ins on 127.0.0.1 for the remote-COG tests.

- :class:`StaticServer`: nginx serving a folder (static files answer HTTP Range requests
  with 206), so ``http://127.0.0.1:PORT/<path>`` and, with GDAL's S3 settings pointed at
  it, ``s3://<first folder>/<rest>`` read the files through GDAL's network drivers. Its
  access log tells which requests were made (status, ``Range`` header).
- :class:`SilentServer`: accepts connections and never answers (a hung storage backend).
- :class:`DelayProxy`: adds a fixed latency per request in front of a server (benchmarks).

nginx is a test dependency (deploy/install-system-deps.sh); tests skip without it.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, *, timeout: float = 10.0, up: bool = True) -> None:
    """Wait until 127.0.0.1:``port`` accepts connections (or refuses them, ``up=False``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.02)
    raise TimeoutError(f"port {port} still {'closed' if up else 'open'} after {timeout} s")


def terminate(proc: subprocess.Popen) -> None:
    """Stop a process this module started: SIGTERM, then SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class StaticServer:
    """nginx serving ``root`` on 127.0.0.1 (``start``/``stop``; ``url``; ``requests()``).

    ``tls=True``: HTTPS with HTTP/2 and a self-signed certificate for 127.0.0.1 made with
    the ``openssl`` command (``cert`` is its path)."""

    def __init__(self, root: Path, run_dir: Path, *, tls: bool = False) -> None:
        self.root = root
        self.run_dir = run_dir
        self.tls = tls
        self.cert = run_dir / "cert.pem"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _make_cert(self) -> str:
        key = self.run_dir / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "2", "-subj", "/CN=127.0.0.1", "-addext",
                        "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out",
                        str(self.cert)], check=True, capture_output=True, timeout=60)
        return (f"        ssl_certificate {self.cert};\n"
                f"        ssl_certificate_key {key};\n")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _conf(self) -> Path:
        run = self.run_dir
        (run / "tmp").mkdir(parents=True, exist_ok=True)
        user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
        temps = "".join(f"    {k}_temp_path {run / 'tmp' / k};\n"
                        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        log_format = ('\'$status "$request" range=$http_range sent=$body_bytes_sent '
                      'protocol=$server_protocol\'')
        tls = self._make_cert() if self.tls else ""
        listen = f"127.0.0.1:{self.port}" + (" ssl http2" if self.tls else "")
        conf = run / "nginx.conf"
        conf.write_text(
            f"{user}worker_processes 1;\npid {run / 'nginx.pid'};\n"
            f"error_log {run / 'error.log'} warn;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n{temps}    log_format ranges {log_format};\n"
            f"    access_log {run / 'access.log'} ranges;\n"
            "    default_type application/octet-stream;\n"
            f"    server {{\n        listen {listen};\n{tls}"
            f"        root {self.root};\n    }}\n}}\n")
        return conf

    def start(self) -> StaticServer:
        nginx = shutil.which("nginx")
        if nginx is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
        conf = self._conf()
        self.proc = subprocess.Popen(
            [nginx, "-p", str(self.run_dir), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop nginx (the process this object started) and wait until the port refuses."""
        if self.proc is None:
            return
        terminate(self.proc)
        self.proc = None
        wait_port(self.port, up=False)

    def requests(self) -> list[str]:
        """Access-log lines so far: ``'<status> "<request line>" range=<Range header>
        sent=<body bytes sent> protocol=<HTTP/1.1 or HTTP/2.0>'``."""
        path = self.run_dir / "access.log"
        return path.read_text().splitlines() if path.exists() else []


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte (until ``stop``)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self._conns.append(conn)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for c in self._conns:
            c.close()
        self.sock.close()


def rehost(item, root: Path, base: str):
    """A copy of pystac ``item`` whose asset hrefs under ``root`` point to ``base`` +
    their path below ``root`` (``http://127.0.0.1:PORT/...`` or ``s3://bucket/...``)."""
    out = item.clone()
    for asset in out.assets.values():
        rel = Path(asset.href).resolve().relative_to(root.resolve())
        asset.href = f"{base.rstrip('/')}/{rel.as_posix()}"
    return out


class DelayProxy:
    """A TCP proxy on 127.0.0.1 in front of ``port`` that waits ``delay_ms`` before
    forwarding each chunk a client sends (one chunk per HTTP request on a keep-alive
    connection): object-storage latency on loopback. It runs in its own process (this
    module as a script): GDAL may hold the GIL while it opens a remote file, so a proxy
    thread in the reading process would stall with it."""

    def __init__(self, port: int, delay_ms: float) -> None:
        self.target = port
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, __file__, str(self.port), str(port),
                                      str(delay_ms)])
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop the proxy process this object started."""
        terminate(self.proc)


async def _proxy(listen: int, target: int, delay: float) -> None:
    async def pipe(reader, writer, wait: float) -> None:
        try:
            while data := await reader.read(65536):
                if wait:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def handle(client_r, client_w) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, server_w, delay), pipe(server_r, client_w, 0.0))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":  # the DelayProxy process: LISTEN_PORT TARGET_PORT DELAY_MS
    asyncio.run(_proxy(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000))

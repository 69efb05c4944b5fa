"""A registry of the Docker Registry HTTP API v2, just enough for `docker push`, in this process: an
image pushed to it gets a registry digest (``RepoDigests``) on the local engine, as a pulled one has,
so the image lock's digests and pins are tested on the real engine with no registry reachable.
Docker treats a registry on 127.0.0.1 as insecure (plain HTTP) without configuration."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class _Registry(BaseHTTPRequestHandler):
    blobs: dict[str, bytes]
    uploads: dict[str, bytearray]
    manifests: dict[str, tuple[bytes, str]]

    def log_message(self, *_: object) -> None:
        return None

    def _send(self, code: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(code)
        for key, value in {"Docker-Distribution-API-Version": "registry/2.0", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):  # how docker sends a layer
            data = bytearray()
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()  # the empty line after the last chunk
            return bytes(data)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        path = urlparse(self.path).path
        if path == "/v2/":
            return self._send(200, body=b"{}")
        if "/manifests/" in path:
            found = self.manifests.get(path)
            if found is None:
                return self._send(404)
            body, kind = found
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            return self._send(200, {"Content-Type": kind, "Docker-Content-Digest": digest}, body)
        digest = path.rsplit("/", 1)[-1]
        if "/blobs/" in path and digest in self.blobs:
            return self._send(200, {"Docker-Content-Digest": digest}, self.blobs[digest])
        return self._send(404)

    do_HEAD = do_GET

    def do_POST(self) -> None:
        path = urlparse(self.path).path
        self._body()
        upload = uuid.uuid4().hex
        self.uploads[upload] = bytearray()
        location = f"{path.rstrip('/')}/{upload}"
        self._send(202, {"Location": location, "Docker-Upload-UUID": upload, "Range": "0-0"})

    def do_PATCH(self) -> None:
        path = urlparse(self.path).path
        upload = path.rsplit("/", 1)[-1]
        self.uploads[upload] += self._body()
        size = len(self.uploads[upload])
        self._send(202, {"Location": path, "Docker-Upload-UUID": upload, "Range": f"0-{max(size - 1, 0)}"})

    def do_PUT(self) -> None:
        parsed = urlparse(self.path)
        path = parsed.path
        body = self._body()
        if "/manifests/" in path:
            kind = self.headers.get("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            self.manifests[path] = (body, kind)
            self.manifests[path.rsplit("/", 1)[0] + "/" + digest] = (body, kind)
            self._send(201, {"Docker-Content-Digest": digest, "Location": path})
            return
        upload = path.rsplit("/", 1)[-1]
        data = bytes(self.uploads.pop(upload, bytearray())) + body
        digest = parse_qs(parsed.query)["digest"][0]
        self.blobs[digest] = data
        self._send(201, {"Docker-Content-Digest": digest, "Location": path})


@contextmanager
def running() -> Iterator[str]:
    """A registry on 127.0.0.1 at a free port; its ``host:port``."""
    handler = type("Registry", (_Registry,), {"blobs": {}, "uploads": {}, "manifests": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()

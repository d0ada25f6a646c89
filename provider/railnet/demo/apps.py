"""The demo's three tiny apps, run inside instance namespaces by ``railnet demo``.

    python -m railnet.demo.apps database PORT
    python -m railnet.demo.apps worker PORT DATABASE_URL
    python -m railnet.demo.apps fetch URL [TIMEOUT]

They use nothing but the standard library and plain ``http://`` by DNS name: inside the
mesh WireGuard already encrypts every packet.
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class DualStackServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _serve(port: int, body: object) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            payload = body() if callable(body) else body
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: object) -> None:
            pass

    server = DualStackServer(("::", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


def fetch(url: str, timeout: float = 3.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def main(argv: list[str]) -> int:
    role = argv[0]
    if role == "database":
        _serve(int(argv[1]), {"service": "database", "rows": 42})
    elif role == "worker":
        database = argv[2]
        _serve(int(argv[1]), lambda: {"service": "worker", "database": fetch(database)})
    elif role == "fetch":
        try:
            print(json.dumps(fetch(argv[1], float(argv[2]) if len(argv) > 2 else 3.0)))
        except OSError as exc:
            print(f"unreachable: {exc}", file=sys.stderr)
            return 1
    else:
        print(f"unknown role {role}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

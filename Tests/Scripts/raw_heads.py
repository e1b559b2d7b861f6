"""Sends requests on one connection the ways a byte-level reader must cope with, and prints,
as JSON, each response in the order it came: [status, Content-Length, body bytes read,
Docker-Content-Digest].

  - the first request in two writes, split inside a header line, with a pause between;
  - then all the others back to back in one write (pipelined, as RFC 9112 allows).

Usage: raw_heads.py HOST:PORT METHOD:PATH[|HEADER=VALUE]...  (the proxy token on standard input)
"""
import base64
import json
import socket
import sys
import time


def main() -> int:
    host, port = sys.argv[1].rsplit(":", 1)
    token = sys.stdin.read().strip()
    authorization = "Basic " + base64.b64encode(f"workload:{token}".encode()).decode()
    requests = []
    for argument in sys.argv[2:]:
        spec, *extra = argument.split("|")
        method, path = spec.split(":", 1)
        headers = "".join(f"{name}: {value}\r\n" for name, value in (pair.split("=", 1) for pair in extra))
        wire = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {authorization}\r\n{headers}\r\n".encode()
        requests.append((method, wire))
    connection = socket.create_connection((host, int(port)), timeout=30)
    first = requests[0][1]
    cut = first.index(b"Authorization: ") + 20
    connection.sendall(first[:cut])
    time.sleep(0.3)
    connection.sendall(first[cut:])
    connection.sendall(b"".join(wire for _, wire in requests[1:]))
    reader = connection.makefile("rb")
    responses = []
    for method, _ in requests:
        status = int(reader.readline().split()[1])
        length, digest = None, None
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
            if name.strip().lower() == "docker-content-digest":
                digest = value.strip()
        body = b"" if method == "HEAD" or not length else reader.read(length)
        responses.append([status, length, len(body), digest])
    connection.close()
    print(json.dumps(responses))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sends HTTP/1.1 requests back to back on one connection (pipelined, as RFC 9112 allows) and
prints, as JSON, each response in the order it came: [status, Content-Length, body bytes read].

Usage: pipelined.py HOST:PORT METHOD:PATH...  (the proxy token on standard input)
"""
import base64
import json
import socket
import sys


def main() -> int:
    host, port = sys.argv[1].rsplit(":", 1)
    requests = [argument.split(":", 1) for argument in sys.argv[2:]]
    token = sys.stdin.read().strip()
    authorization = "Basic " + base64.b64encode(f"workload:{token}".encode()).decode()
    wire = b"".join(
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {authorization}\r\n\r\n".encode()
        for method, path in requests)
    connection = socket.create_connection((host, int(port)), timeout=30)
    connection.sendall(wire)
    reader = connection.makefile("rb")
    responses = []
    for method, _ in requests:
        status = int(reader.readline().split()[1])
        length = None
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        body = b"" if method == "HEAD" or not length else reader.read(length)
        responses.append([status, length, len(body)])
    connection.close()
    print(json.dumps(responses))
    return 0


if __name__ == "__main__":
    sys.exit(main())

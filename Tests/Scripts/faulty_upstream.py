"""An upstream registry whose connections fail half-way, in the ways real ones do: reset
(RST), closed (FIN) or stalled (silent, and for uploads no longer reading) in the middle of a
blob's body, on pulls and on pushes. Beside it, a port that accepts no connection: its listen
queue is full, so connecting to it hangs as it does to a host that drops packets. Prints both
ports on the first line of stdout ("PORT UNACCEPTING-PORT"). Listens on 127.0.0.1 only; runs
until killed.

Routes (anonymous, HTTP/1.1, keep-alive), FAULT one of reset, close, stall, none:
  GET  /v2/                                    200
  GET  /v2/FAULT/app/blobs/DIGEST              200, Content-Length 8 MiB; after 1 MiB, FAULT
  POST /v2/FAULT/app/blobs/uploads/            202 with a Location
  PATCH|PUT /v2/FAULT/app/blobs/uploads/ID     after 1 MiB of the body is read, FAULT; with
                                               none, the body is read whole and answered 202/201
The blob is BLOB_SIZE bytes of (i * 7) & 0xFF; `none` serves it whole.
"""
import signal
import socket
import struct
import sys
import threading
import time

BLOB_SIZE = 8 << 20
FAULT_AFTER = 1 << 20
BLOB = bytes((i * 7) & 0xFF for i in range(256)) * (BLOB_SIZE // 256)


def read_head(conn, buffered):
    while b"\r\n\r\n" not in buffered:
        data = conn.recv(65536)
        if not data:
            return None, b""
        buffered += data
    head, rest = buffered.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return (method, target, headers), rest


def answer(conn, status, headers=(), body=b""):
    lines = [f"HTTP/1.1 {status}", "Docker-Distribution-API-Version: registry/2.0", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers]
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def fail(conn, fault):
    if fault == "reset":
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    elif fault == "close":
        conn.shutdown(socket.SHUT_RDWR)
        conn.close()
    else:  # stall: hold the connection, reading and writing nothing, until the peer leaves
        try:
            while True:
                time.sleep(0.2)
                try:
                    if conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                        break
                except BlockingIOError:
                    continue
        except OSError:
            pass
        finally:
            conn.close()


def read_body(conn, rest, length, limit):
    """Reads up to `limit` bytes of a body of `length` (None: chunked, read raw); the rest read."""
    got = len(rest)
    while got < min(limit, length if length is not None else limit):
        data = conn.recv(65536)
        if not data:
            break
        got += len(data)
    return got


def serve(conn):
    buffered = b""
    while True:
        request, buffered = read_head(conn, buffered)
        if request is None:
            conn.close()
            return
        method, target, headers = request
        path = target.split("?")[0]
        parts = path.strip("/").split("/")
        length = int(headers["content-length"]) if "content-length" in headers else None
        if path == "/v2/" or path == "/v2":
            answer(conn, "200 OK", [("Content-Type", "application/json")], b"{}")
            continue
        fault = parts[1] if len(parts) > 1 else "none"
        if method in ("GET", "HEAD") and len(parts) == 5 and parts[3] == "blobs":
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {BLOB_SIZE}\r\nContent-Type: application/octet-stream\r\n"
            head += f"Docker-Content-Digest: {parts[4]}\r\n\r\n"
            conn.sendall(head.encode())
            if method == "HEAD":
                continue
            if fault == "none":
                conn.sendall(BLOB)
                continue
            conn.sendall(BLOB[:FAULT_AFTER])
            return fail(conn, fault)
        if method == "POST" and path.endswith("/blobs/uploads/"):
            location = f"/v2/{fault}/app/blobs/uploads/u1?_state=s"
            answer(conn, "202 Accepted", [("Location", location), ("Docker-Upload-UUID", "u1"), ("Range", "0-0")])
            continue
        if method in ("PATCH", "PUT") and "/blobs/uploads/" in path:
            if fault == "none":
                got = len(buffered)
                while length is not None and got < length:
                    data = conn.recv(65536)
                    if not data:
                        return conn.close()
                    got += len(data)
                buffered = b""
                status = "201 Created" if method == "PUT" else "202 Accepted"
                answer(conn, status, [("Location", f"/v2/none/app/blobs/uploads/u1?_state=s"), ("Range", f"0-{got - 1}")])
                continue
            read_body(conn, buffered, length, FAULT_AFTER)
            return fail(conn, fault)
        answer(conn, "404 Not Found", [("Content-Type", "application/json")], b'{"errors":[{"code":"NAME_UNKNOWN"}]}')


def main():
    # A parent may start it with signals blocked (Foundation's Process passes its thread's mask on).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    # A backlog of 0 holds one connection, never accepted: later SYNs are dropped.
    unaccepting = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    unaccepting.bind(("127.0.0.1", 0))
    unaccepting.listen(0)
    filler = socket.create_connection(unaccepting.getsockname())
    print(server.getsockname()[1], unaccepting.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()

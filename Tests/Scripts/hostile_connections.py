"""Opens connections to the proxy the way an attacker or a broken client would, and prints what
the proxy did as one JSON object: the status lines it answered, whether it said
`Connection: close`, and whether it closed the connection. Never reaches beyond loopback.

Usage:
  hostile_connections.py flood PORT connect|upgrade|upgrade-anonymous MIB   (the proxy token on stdin)
  hostile_connections.py partial-head PORT
  hostile_connections.py silent PORT
  hostile_connections.py oversized-head PORT BYTES
  hostile_connections.py over-limit PORT OPEN
  hostile_connections.py http10-pipelined PORT
  hostile_connections.py stalled-body PORT PATH   (the proxy token on stdin)
  hostile_connections.py abandon-downloads PORT PATH COUNT   (the proxy token on stdin)
  hostile_connections.py abandon-uploads PORT REPOSITORY-PATH COUNT   (the proxy token on stdin)
  hostile_connections.py hold-idle PORT COUNT PROXY-PID   (the proxy token on stdin)
"""
import base64
import json
import socket
import struct
import sys
import time

# Each wait is bounded: a proxy that never answers or never closes shows as such, not as a hang.
WAIT = 20.0


def connect(port):
    connection = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    connection.settimeout(WAIT)
    return connection


def read_until_closed(connection):
    """Everything the proxy sends until it closes (True) or WAIT passes (False)."""
    data = b""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        connection.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = connection.recv(65536)
        except socket.timeout:
            return data, False
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def responses(data):
    """The status codes and `Connection` values of the answers in `data`."""
    found = []
    for block in data.split(b"HTTP/1.")[1:]:
        lines = block.split(b"\r\n")
        status = int(lines[0].split()[1])
        connection = next((line.split(b":", 1)[1].strip().decode().lower() for line in lines[1:]
                           if line.lower().startswith(b"connection:")), None)
        found.append({"status": status, "connection": connection})
    return found


def flood(port, mode, mebibytes, token):
    authorization = "Basic " + base64.b64encode(f"workload:{token}".encode()).decode()
    heads = {
        "connect": b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n",
        "upgrade": (f"GET /v2/ HTTP/1.1\r\nHost: proxy\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                    f"Authorization: {authorization}\r\n\r\n").encode(),
        "upgrade-anonymous": b"GET /v2/ HTTP/1.1\r\nHost: proxy\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    }
    connection = connect(port)
    connection.sendall(heads[mode])
    chunk = b"x" * (1 << 20)
    sent = 0
    try:
        for _ in range(mebibytes):
            connection.sendall(chunk)
            sent += 1
    except OSError:
        pass  # The proxy closed the connection: what it should do.
    data, closed = read_until_closed(connection)
    return {"responses": responses(data), "closed": closed, "mebibytes_sent": sent}


def partial_head(port):
    connection = connect(port)
    connection.sendall(b"GET /v2/ HTTP/1.1\r\nHost: proxy\r\nX-Slow: ")
    data, closed = read_until_closed(connection)
    return {"responses": responses(data), "closed": closed, "body": data.split(b"\r\n\r\n", 1)[-1].decode()}


def silent(port):
    data, closed = read_until_closed(connect(port))
    return {"responses": responses(data), "closed": closed}


def oversized_head(port, size):
    connection = connect(port)
    try:
        connection.sendall(b"GET /v2/ HTTP/1.1\r\nHost: proxy\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
    except OSError:
        pass
    data, closed = read_until_closed(connection)
    return {"responses": responses(data), "closed": closed, "body": data.split(b"\r\n\r\n", 1)[-1].decode()}


def over_limit(port, count):
    held = [connect(port) for _ in range(count)]
    time.sleep(0.5)  # Let the proxy accept them all before the one too many.
    extra = connect(port)
    data, closed = read_until_closed(extra)
    for connection in held:
        connection.close()
    # Once they are gone, a new connection is served again.
    served = None
    for _ in range(50):
        time.sleep(0.1)
        again = connect(port)
        again.sendall(b"GET /v2/ HTTP/1.1\r\nHost: proxy\r\n\r\n")
        try:
            served = responses(again.recv(65536))
        except OSError:
            served = None
        again.close()
        if served and served[0]["status"] != 503:
            break
    return {"responses": responses(data), "closed": closed, "afterwards": served}


def http10_pipelined(port):
    connection = connect(port)
    connection.sendall(b"GET /v2/ HTTP/1.0\r\n\r\nGET /v2/ HTTP/1.1\r\nHost: proxy\r\n\r\n")
    data, closed = read_until_closed(connection)
    return {"responses": responses(data), "closed": closed}


def stalled_body(port, path, token):
    """A push whose body stops after 10 of the 1000 bytes it announced."""
    authorization = "Basic " + base64.b64encode(f"workload:{token}".encode()).decode()
    connection = connect(port)
    connection.sendall((f"POST {path} HTTP/1.1\r\nHost: proxy\r\nAuthorization: {authorization}\r\n"
                        "Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n").encode()
                       + b"0123456789")
    data, closed = read_until_closed(connection)
    return {"responses": responses(data), "closed": closed, "body": data.split(b"\r\n\r\n", 1)[-1].decode()}


def leave(connection, reset):
    """Closes the connection, with a reset (SO_LINGER 0) or a plain FIN."""
    if reset:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def abandon_downloads(port, path, count, token):
    """Starts `count` reads of a blob and leaves each once its body has begun, every other one
    with a reset. Returns how many got as far as the body."""
    authorization = "Basic " + base64.b64encode(f"workload:{token}".encode()).decode()
    begun = 0
    for index in range(count):
        connection = connect(port)
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: proxy\r\nAuthorization: {authorization}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) == 0:
            chunk = connection.recv(65536)
            if not chunk:
                break
            data += chunk
        if data.startswith(b"HTTP/1.1 200") and len(data.split(b"\r\n\r\n", 1)[-1]) > 0:
            begun += 1
        leave(connection, index % 2 == 0)
    return {"begun": begun}


def abandon_uploads(port, repository_path, count, token):
    """Starts `count` uploads that announce 8 MiB, sends 1 MiB of each and leaves, every other
    one with a reset. Returns how many uploads were started."""
    authorization = "Basic " + base64.b64encode(f"workload:{token}".encode()).decode()
    started = 0
    chunk = b"u" * (1 << 20)
    for index in range(count):
        connection = connect(port)
        connection.sendall((f"POST {repository_path}/blobs/uploads/ HTTP/1.1\r\nHost: proxy\r\n"
                            f"Authorization: {authorization}\r\nContent-Length: 0\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            part = connection.recv(65536)
            if not part:
                break
            head += part
        location = next((line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                         if line.lower().startswith(b"location:")), None)
        if not head.startswith(b"HTTP/1.1 202") or location is None:
            leave(connection, False)
            continue
        started += 1
        if location.startswith("http"):
            location = "/" + location.split("/", 3)[3]
        connection.sendall((f"PATCH {location} HTTP/1.1\r\nHost: proxy\r\nAuthorization: {authorization}\r\n"
                            f"Content-Type: application/octet-stream\r\nContent-Length: {8 << 20}\r\n\r\n").encode())
        connection.sendall(chunk)
        leave(connection, index % 2 == 0)
    return {"started": started}


def resident_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1])


def hold_idle(port, count, pid, token):
    """Opens `count` keep-alive connections that each make one request and then stay idle, then
    serves a normal client 50 requests on a fresh connection while they are held. Reports what
    each got, the normal client's latencies, how many idle ones are still open, and the proxy's
    resident memory before and while they are held."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    authorization = "Basic " + base64.b64encode(f"workload:{token}".encode()).decode()
    request = f"GET /v2/ HTTP/1.1\r\nHost: proxy\r\nAuthorization: {authorization}\r\n\r\n".encode()
    before = resident_kib(pid)
    idle, answered = [], 0
    for _ in range(count):
        try:
            connection = connect(port)
            connection.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                chunk = connection.recv(65536)
                if not chunk:
                    break
                data += chunk
            if data.startswith(b"HTTP/1.1 200"):
                answered += 1
            idle.append(connection)
        except OSError:
            break
    held = resident_kib(pid)
    normal = connect(port)
    statuses, latencies = [], []
    for _ in range(50):
        started = time.monotonic()
        normal.sendall(request)
        data = b""
        while not data.endswith(b"}"):
            chunk = normal.recv(65536)
            if not chunk:
                break
            data += chunk
        latencies.append((time.monotonic() - started) * 1000)
        statuses.append(int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0)
    still_open = 0
    for connection in idle:
        connection.setblocking(False)
        try:
            still_open += 0 if connection.recv(1) == b"" else 1
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
        connection.close()
    latencies.sort()
    return {"answered": answered, "statuses": statuses, "still_open": still_open, "resident_before_kib": before,
            "resident_held_kib": held, "latency_ms_p50": latencies[len(latencies) // 2], "latency_ms_max": latencies[-1]}


def main():
    command, port = sys.argv[1], int(sys.argv[2])
    if command == "flood":
        result = flood(port, sys.argv[3], int(sys.argv[4]), sys.stdin.read().strip())
    elif command == "partial-head":
        result = partial_head(port)
    elif command == "silent":
        result = silent(port)
    elif command == "oversized-head":
        result = oversized_head(port, int(sys.argv[3]))
    elif command == "over-limit":
        result = over_limit(port, int(sys.argv[3]))
    elif command == "http10-pipelined":
        result = http10_pipelined(port)
    elif command == "hold-idle":
        result = hold_idle(port, int(sys.argv[3]), int(sys.argv[4]), sys.stdin.read().strip())
    elif command == "abandon-downloads":
        result = abandon_downloads(port, sys.argv[3], int(sys.argv[4]), sys.stdin.read().strip())
    elif command == "abandon-uploads":
        result = abandon_uploads(port, sys.argv[3], int(sys.argv[4]), sys.stdin.read().strip())
    elif command == "stalled-body":
        result = stalled_body(port, sys.argv[3], sys.stdin.read().strip())
    else:
        raise SystemExit(f"unknown command {command}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

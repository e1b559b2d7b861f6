#!/usr/bin/env python3
"""End-to-end benchmark: the registry direct, nginx injecting Authorization (default and tuned
buffers), and oci-connector-proxy, side by side on loopback, in alternating rounds.

Prints one table with proxy/nginx and proxy/direct ratios and writes it as JSON. Bounded in time;
cleans up after itself. Run from the repository root:

    bash Benchmarks/EndToEnd/run.sh            # builds the release proxy, then runs this
    python3 Benchmarks/EndToEnd/bench.py --size-mib 256 --rounds 1   # a quick pass
"""
import argparse
import base64
import concurrent.futures
import hashlib
import http.client
import http.server
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

MiB = 1 << 20
USER, PASSWORD = "bench", "bench-secret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pids):
    """CPU time of the processes' threads, in nanoseconds from the scheduler's accounting
    (`/proc/PID/task/*/schedstat`): `/proc/PID/stat` counts in 10 ms ticks, a tenth of the
    CPU that 1000 manifest requests cost."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                total += int(open(f"/proc/{pid}/task/{task}/schedstat").read().split()[0]) / 1e9
            except (FileNotFoundError, ProcessLookupError):
                pass  # The thread ended.
    return total


def machine_ticks():
    """(all, idle) jiffies of the whole machine from /proc/stat: the share of both cores in use
    while a cell runs tells whether it was limited by CPU or by something else."""
    values = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return sum(values), values[3] + values[4]


def children_cpu_seconds():
    """CPU of the load generators this script ran and waited for (curl)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rss_kib(pid, field="VmRSS"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def nginx_relay_directives(tuned):
    """What each nginx location that relays to a registry says: streaming both ways, keep-alive
    upstream connections, long timeouts, and with `tuned` larger buffers, sendfile and nodelay."""
    buffers = ("proxy_buffer_size 256k; proxy_buffers 8 256k; proxy_busy_buffers_size 512k;"
               " sendfile on; tcp_nodelay on;") if tuned else ""
    return ("proxy_buffering off; proxy_request_buffering off; client_max_body_size 0;"
            " proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host $http_host;"
            f" proxy_read_timeout 600s; proxy_send_timeout 600s; {buffers}")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """Distribution token auth: RS256 JWTs with the signing certificate in x5c, signed by openssl.
    Counts the token requests it answers."""

    def __init__(self, work):
        self.key, self.cert = os.path.join(work, "issuer.key"), os.path.join(work, "issuer.pem")
        subprocess.check_call(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key,
                               "-out", self.cert, "-days", "1", "-subj", "/CN=bench-issuer"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        der = subprocess.check_output(["openssl", "x509", "-in", self.cert, "-outform", "DER"])
        self.x5c = base64.b64encode(der).decode()
        self.requests = 0
        self.lock = threading.Lock()
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_):
                pass

            def do_GET(self):
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                with issuer.lock:
                    issuer.requests += 1
                body = json.dumps({"token": issuer.sign(query.get("scope", [])), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def realm(self):
        return f"http://127.0.0.1:{self.port}/token"

    def sign(self, scopes):
        access = []
        for scope in scopes:
            for item in scope.split(" "):
                kind, _, rest = item.partition(":")
                name, _, actions = rest.rpartition(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "x5c": [self.x5c]}).encode())
        claims = b64url(json.dumps({"iss": "bench-issuer", "sub": USER, "aud": "bench-registry", "iat": now,
                                    "nbf": now - 5, "exp": now + 300, "jti": os.urandom(8).hex(),
                                    "access": access}).encode())
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=f"{header}.{claims}".encode(),
                                   capture_output=True, check=True).stdout
        return f"{header}.{claims}.{b64url(signature)}"

    def stop(self):
        self.server.shutdown()


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="oci-bench-")
        self.processes = []
        self.results = {}
        self.registry_pids = {}

    # ---------------------------------------------------------------- set-up
    def start(self, argv, **kwargs):
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, **kwargs)
        self.processes.append(process)
        return process

    def registry(self, name, htpasswd, issuer=None, tls=None):
        port = free_port()
        auth = ""
        if issuer:
            auth = (f"auth:\n  token:\n    realm: {issuer.realm}\n    service: bench-registry\n"
                    f"    issuer: bench-issuer\n    rootcertbundle: {issuer.cert}\n")
        elif htpasswd:
            line = subprocess.check_output(["htpasswd", "-Bbn", USER, PASSWORD], text=True).strip()
            path = os.path.join(self.work, f"{name}.htpasswd")
            open(path, "w").write(line + "\n")
            auth = f"auth:\n  htpasswd:\n    realm: bench\n    path: {path}\n"
        config = os.path.join(self.work, f"{name}.yml")
        open(config, "w").write(
            f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.work}/{name}-storage\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n  secret: bench\n"
            + (f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n" if tls else "") + auth)
        self.registry_pids[port] = self.start(["docker-registry", "serve", config]).pid
        wait_port(port)
        return port

    def certificate(self):
        """A self-signed certificate for 127.0.0.1, as a private registry's: (certificate, key)."""
        cert, key = os.path.join(self.work, "registry.crt"), os.path.join(self.work, "registry.key")
        subprocess.check_call(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                               "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                               "-addext", "subjectAltName=IP:127.0.0.1"], stderr=subprocess.DEVNULL)
        return cert, key

    def nginx(self, name, registry_port, anonymous_port, tuned, secure_port):
        """nginx in front of the plain registries and, on a third port, the https one; returns the
        three ports and the process."""
        port, anonymous, secure = free_port(), free_port(), free_port()
        basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        location = nginx_relay_directives(tuned)
        config = os.path.join(self.work, f"{name}.conf")
        open(config, "w").write(f"""
worker_processes 2; daemon off; pid {self.work}/{name}.pid; error_log {self.work}/{name}.err error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {self.work}/{name}-body; proxy_temp_path {self.work}/{name}-proxy;
  fastcgi_temp_path {self.work}/{name}-fcgi; uwsgi_temp_path {self.work}/{name}-uwsgi; scgi_temp_path {self.work}/{name}-scgi;
  upstream authed {{ server 127.0.0.1:{registry_port}; keepalive 64; }}
  upstream anonymous {{ server 127.0.0.1:{anonymous_port}; keepalive 64; }}
  upstream secure {{ server 127.0.0.1:{secure_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port};
    location / {{ proxy_pass http://authed; proxy_set_header Authorization "Basic {basic}"; {location} }} }}
  server {{ listen 127.0.0.1:{anonymous};
    location = /v2/ {{ default_type application/json; return 200 "{{}}"; }}
    location / {{ proxy_pass http://anonymous; {location} }} }}
  server {{ listen 127.0.0.1:{secure};
    location / {{ proxy_pass https://secure; proxy_set_header Authorization "Basic {basic}"; {location}
      proxy_ssl_trusted_certificate {self.work}/registry.crt; proxy_ssl_verify on; proxy_ssl_name 127.0.0.1;
      proxy_ssl_session_reuse on; }} }}
}}
""")
        process = self.start(["nginx", "-c", config, "-p", self.work])
        wait_port(port)
        return port, anonymous, process, secure

    def proxy(self, registry_port, anonymous_port, token_port, secure_port, binary=None):
        """Starts a proxy (`binary`, the one measured by default) for the four registries; returns its
        port, a workload token and the process."""
        keys = os.path.join(self.work, "keys")
        if not os.path.exists(keys):
            subprocess.check_call([self.args.config_bin, "keys", "generate", "--out", keys], stdout=subprocess.DEVNULL)
        connectors = os.path.join(self.work, "connectors.yaml")
        open(connectors, "w").write(f"""
kind: Connector
metadata: {{name: authed, namespace: bench}}
spec: {{address: "http://127.0.0.1:{registry_port}", auth: {{secretRef: {{name: creds}}}}}}
---
kind: Secret
metadata: {{name: creds, namespace: bench}}
stringData: {{username: {USER}, password: {PASSWORD}}}
---
kind: Connector
metadata: {{name: anonymous, namespace: bench}}
spec: {{address: "http://127.0.0.1:{anonymous_port}"}}
---
kind: Connector
metadata: {{name: tokened, namespace: bench}}
spec: {{address: "http://127.0.0.1:{token_port}", auth: {{secretRef: {{name: creds}}}}}}
---
kind: Connector
metadata: {{name: secure, namespace: bench}}
spec: {{address: "https://127.0.0.1:{secure_port}", auth: {{secretRef: {{name: creds}}}}, tls: {{caFile: {self.work}/registry.crt}}}}
""")
        process = self.start([binary or self.args.proxy_bin, "--connectors", connectors, "--listen", "127.0.0.1:0",
                              "--token-keys", f"{keys}/verification-key.jwk", "--log-level", "warning"])
        # "listening on HOST:PORT" is the last line it prints on start (after the admin one, if any).
        line = process.stdout.readline().decode()
        while not line.startswith("listening on ") and line:
            line = process.stdout.readline().decode()
        port = int(line.strip().rsplit(":", 1)[1])
        token = subprocess.check_output(
            [self.args.config_bin, "token", "--connector", "bench/authed,bench/anonymous,bench/tokened,bench/secure", "--actions", "pull,push",
             "--ttl", "2h", "--signing-key", f"{keys}/signing-key.jwk"], text=True).strip()
        return port, token, process

    # ---------------------------------------------------------------- transfers
    def curl(self, *argv):
        out = subprocess.check_output(["curl", "-sf", "-w", "%{http_code} %{size_download} %{size_upload} %{time_total}", *argv], text=True)
        code, down, up, seconds = out.rsplit(None, 4)[-4:]
        return int(code), float(down), float(up), float(seconds)

    def pull(self, path, streams):
        url = f"{path['base']}/v2/{path['prefix']}bench/blob/blobs/{self.digest}"
        start = time.time()
        with concurrent.futures.ThreadPoolExecutor(streams) as pool:
            sizes = list(pool.map(lambda _: self.curl(*path["auth"], "-o", "/dev/null", url)[1], range(streams)))
        elapsed = time.time() - start
        assert all(size == self.size for size in sizes), sizes
        return sum(sizes) / elapsed / 1e6

    def push(self, path, repository, chunked):
        base = f"{path['base']}/v2/{path['prefix']}{repository}"
        location = self.start_upload(path, base)
        start = time.time()
        if chunked:
            offset = 0
            for part in self.parts:
                size = os.path.getsize(part)
                headers = subprocess.check_output(
                    ["curl", "-sf", "-D", "-", "-o", "/dev/null", *path["auth"], "-X", "PATCH", "-T", part,
                     "-H", "Content-Type: application/octet-stream", "-H", f"Content-Range: {offset}-{offset + size - 1}", location],
                    text=True)
                location = self.location(headers, path)
                offset += size
            code = self.curl(*path["auth"], "-X", "PUT", "-H", "Content-Type: application/octet-stream",
                             f"{location}&digest={self.digest}")[0]
        else:
            code = self.curl(*path["auth"], "-X", "PUT", "-T", self.blob, "-H", "Content-Type: application/octet-stream",
                             f"{location}&digest={self.digest}")[0]
        elapsed = time.time() - start
        assert code == 201, code
        return self.size / elapsed / 1e6

    def start_upload(self, path, base):
        headers = subprocess.check_output(["curl", "-sf", "-D", "-", "-o", "/dev/null", *path["auth"], "-X", "POST",
                                           f"{base}/blobs/uploads/"], text=True)
        return self.location(headers, path)

    @staticmethod
    def location(headers, path):
        value = [line.split(":", 1)[1].strip() for line in headers.splitlines() if line.lower().startswith("location:")][-1]
        return value if value.startswith("http") else path["base"] + value

    # ---------------------------------------------------------------- manifests
    def latency(self, path, method, connections, requests, target="bench/small/manifests/v1"):
        """Requests (a manifest by default) from one `curl --parallel` over `connections` keep-alive
        connections: p50/p99 of each request's time, requests/s, the CPU per request of the server,
        of the registry behind it and of curl, and the share of both cores in use.
        (wrk cannot do HEAD; ab speaks HTTP/1.0.)"""
        url = f"http://{path['host']}:{path['port']}/v2/{path['prefix']}{target}"
        count = max(requests, connections * 20)
        config = os.path.join(self.work, "latency.cfg")
        open(config, "w").write(f'url = "{url}"\noutput = "/dev/null"\n' * count)
        argv = ["curl", "-s", "--parallel", "--parallel-max", str(connections), "-K", config,
                "-H", "Accept: application/vnd.oci.image.manifest.v1+json", "-w", "%{time_total} %{http_code}\\n"]
        for name, value in path["headers"].items():
            argv += ["-H", f"{name}: {value}"]
        if method == "HEAD":
            argv.append("-I")
        registry = [self.registry_pids[self.registries[1]]]  # Manifests come from the anonymous registry.
        ticks_before, registry_before, client_before = machine_ticks(), cpu_seconds(registry), children_cpu_seconds()
        cpu_before, start = cpu_seconds(path["pids"]), time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True, timeout=300).stdout
        elapsed, cpu = time.perf_counter() - start, cpu_seconds(path["pids"]) - cpu_before
        (all_after, idle_after), registry_cpu = machine_ticks(), cpu_seconds(registry) - registry_before
        client_cpu = children_cpu_seconds() - client_before
        samples = sorted(float(line.split()[0]) for line in out.splitlines())
        codes = {line.split()[1] for line in out.splitlines()}
        assert len(samples) == count and codes == {"200"}, (len(samples), codes)
        result = {"p50_ms": samples[len(samples) // 2] * 1e3, "p99_ms": samples[int(len(samples) * 0.99)] * 1e3,
                  "rps": count / elapsed, "registry_cpu_us": registry_cpu / count * 1e6,
                  "client_cpu_us": client_cpu / count * 1e6,
                  "busy_pct": 100 * (1 - (idle_after - ticks_before[1]) / max(1, all_after - ticks_before[0]))}
        if path["pids"]:
            result["cpu_us"] = cpu / count * 1e6
        return result

    # ---------------------------------------------------------------- run
    def run(self):
        args = self.args
        self.size = args.size_mib * MiB
        self.blob = os.path.join(self.work, "blob")
        subprocess.check_call(["sh", "-c", f"head -c {args.size_mib}M /dev/urandom > {self.blob}"])
        self.digest = "sha256:" + hashlib.sha256(open(self.blob, "rb").read()).hexdigest()
        self.parts = []
        for index in range(0, args.size_mib, 64):
            part = os.path.join(self.work, f"part{index}")
            subprocess.check_call(["dd", f"if={self.blob}", f"of={part}", "bs=1M", f"skip={index}", "count=64", "status=none"])
            self.parts.append(part)

        self.issuer = TokenIssuer(self.work)
        authed = self.registry("authed", True)
        anonymous = self.registry("anonymous", False)
        tokened = self.registry("tokened", False, issuer=self.issuer)
        # Private registries mostly speak https: the same pulls from one with htpasswd auth.
        certificate = self.certificate()
        secure = self.registry("secure", True, tls=certificate)
        self.registries = (authed, anonymous, tokened, secure)
        nginx_default = self.nginx("nginx-default", authed, anonymous, tuned=False, secure_port=secure)
        nginx_tuned = self.nginx("nginx-tuned", authed, anonymous, tuned=True, secure_port=secure)
        proxy_port, token, proxy = self.proxy(*self.registries)
        basic = ["-u", f"{USER}:{PASSWORD}"]
        paths = {
            "direct": {"base": f"http://127.0.0.1:{authed}", "prefix": "", "auth": basic, "pids": [],
                       "host": "127.0.0.1", "port": anonymous, "headers": {}},
            "nginx-default": {"base": f"http://127.0.0.1:{nginx_default[0]}", "prefix": "", "auth": [],
                              "pids": self.nginx_pids("nginx-default"), "host": "127.0.0.1", "port": nginx_default[1], "headers": {}},
            "nginx-tuned": {"base": f"http://127.0.0.1:{nginx_tuned[0]}", "prefix": "", "auth": [],
                            "pids": self.nginx_pids("nginx-tuned"), "host": "127.0.0.1", "port": nginx_tuned[1], "headers": {}},
            "proxy": self.proxy_path(proxy_port, token, proxy),
        }
        # A second proxy binary (another build, such as the previous release) measured in the same
        # rounds, back to back with the first: a before/after comparison free of the host's drift.
        if args.baseline_bin:
            paths["baseline"] = self.proxy_path(*self.proxy(*self.registries, binary=args.baseline_bin))

        secure_paths = {
            "direct": {"base": f"https://127.0.0.1:{secure}", "prefix": "", "auth": basic + ["--cacert", certificate[0]], "pids": []},
            "nginx-tuned": {**paths["nginx-tuned"], "base": f"http://127.0.0.1:{nginx_tuned[3]}"},
            "proxy": {**paths["proxy"], "prefix": "namespaces/bench/connectors/secure/"},
        }
        if "baseline" in paths:
            secure_paths["baseline"] = {**paths["baseline"], "prefix": "namespaces/bench/connectors/secure/"}

        # Seed: the big blob, and a small image for manifest requests.
        if not args.manifests_only:
            self.push(paths["direct"], "bench/blob", chunked=False)
            self.push(secure_paths["direct"], "bench/blob", chunked=False)
        self.seed_image(f"http://127.0.0.1:{anonymous}", "bench/small", [], layer_size=1024)

        rows = {name: {} for name in paths}
        # A push is as fast as the registry can take it in: its own CPU per GiB (hashing, writing)
        # is measured too, since it depends on how the bytes arrive.
        blob_registry = [self.registry_pids[authed]]
        gib = self.size / (1 << 30)
        for round_index in range(0 if args.manifests_only else args.rounds):
            order = list(paths) if round_index % 2 == 0 else list(reversed(paths))
            for name in order:
                path, row = paths[name], rows[name]
                before = cpu_seconds(path["pids"])
                row.setdefault("pull_1", []).append(self.pull(path, 1))
                if path["pids"]:  # Direct: no server in front to measure.
                    row.setdefault("cpu_pull", []).append((cpu_seconds(path["pids"]) - before) / gib)
                row.setdefault("pull_8", []).append(self.pull(path, 8))
                before, registry_before = cpu_seconds(path["pids"]), cpu_seconds(blob_registry)
                row.setdefault("push_mono", []).append(self.push(path, f"bench/push-{name}-{round_index}", False))
                row.setdefault("registry_cpu_push", []).append((cpu_seconds(blob_registry) - registry_before) / gib)
                if path["pids"]:
                    row.setdefault("cpu_push", []).append((cpu_seconds(path["pids"]) - before) / gib)
                registry_before = cpu_seconds(blob_registry)
                row.setdefault("push_chunked", []).append(self.push(path, f"bench/chunk-{name}-{round_index}", True))
                row.setdefault("registry_cpu_push_chunked", []).append((cpu_seconds(blob_registry) - registry_before) / gib)
                if name in secure_paths:
                    path = secure_paths[name]
                    before = cpu_seconds(path["pids"])
                    row.setdefault("secure_pull_1", []).append(self.pull(path, 1))
                    if path["pids"]:
                        row.setdefault("cpu_secure_pull", []).append((cpu_seconds(path["pids"]) - before) / gib)
                    row.setdefault("secure_pull_8", []).append(self.pull(path, 8))

        # Manifest latency, against the anonymous registry (its htpasswd check costs ~2.5 ms a
        # request). Each cell is measured for the three paths one after another, in alternating
        # order, in each round, and the rounds' medians are reported: the host's drift over the
        # minutes this takes then falls on all three alike.
        manifest_paths = {name: {**paths[name], "prefix": paths[name].get("latency_prefix", "")}
                          for name in ["direct", "nginx-tuned", "proxy", "baseline"] if name in paths}
        # The server alone: nginx and the proxy answer `GET /v2/` themselves (the proxy after
        # checking the token), so the difference to a manifest GET is the upstream leg.
        local_paths = {name: {**paths[name], "prefix": ""} for name in ["nginx-tuned", "proxy", "baseline"] if name in paths}
        cells = [(method, connections, f"{method}_{connections}", manifest_paths)
                 for method in ["HEAD", "GET"] for connections in args.connections]
        cells.append(("GET", 8, "local_8", local_paths))
        requests = max(1, args.latency_requests // args.rounds)
        # The cell with the latency target is measured in more, shorter rounds: its verdict is
        # judged on each round's proxy/nginx ratio, whose spread between rounds is wider than
        # the difference it judges.
        target_repeats = max(1, -(-args.target_rounds // args.rounds))
        measured = {}
        for round_index in range(args.rounds):
            for cell_index, (method, connections, key, cell_paths) in enumerate(cells):
                repeats = target_repeats if key == TARGET_CELL else 1
                for repeat in range(repeats):
                    names = list(cell_paths)
                    if (round_index + cell_index + repeat) % 2:
                        names.reverse()
                    for name in names:
                        target = "" if key == "local_8" else "bench/small/manifests/v1"
                        count = max(1000, args.latency_requests // (args.rounds * repeats)) if repeats > 1 else requests
                        result = self.latency(cell_paths[name], method, connections, count, target=target)
                        measured.setdefault((name, key), []).append(result)
        paired = {}
        for key in {key for _, key in measured}:
            proxy, nginx, direct = (measured.get((name, key)) for name in ("proxy", "nginx-tuned", "direct"))
            if not proxy or not nginx:
                continue
            # Round i of each path was measured back to back with round i of the others.
            ratios = [p["rps"] / n["rps"] for p, n in zip(proxy, nginx)]
            entry = {"rps_proxy_to_nginx": {**spread(ratios), "rounds_at_least_nginx": sum(r >= 1 for r in ratios)}}
            baseline = measured.get(("baseline", key))
            if baseline:
                entry["rps_proxy_to_baseline"] = spread([p["rps"] / b["rps"] for p, b in zip(proxy, baseline)])
            if direct:
                entry["p50_ms_proxy_over_direct"] = spread([p["p50_ms"] - d["p50_ms"] for p, d in zip(proxy, direct)])
                entry["p50_ms_nginx_over_direct"] = spread([n["p50_ms"] - d["p50_ms"] for n, d in zip(nginx, direct)])
            paired[key] = entry
        for (name, key), results in measured.items():
            cell = {metric: statistics.median(r[metric] for r in results) for metric in results[0]}
            # What one request costs the machine: the server in front (none when direct), the
            # registry behind it and curl. With both cores busy, requests/s follows its inverse.
            cell["total_cpu_us"] = cell.get("cpu_us", 0) + cell["registry_cpu_us"] + cell["client_cpu_us"]
            rows[name][key] = cell

        self.results = {
            "size_mib": args.size_mib, "rounds": args.rounds,
            "paths": {name: {key: (statistics.median(v) if isinstance(v, list) else v) for key, v in row.items()}
                      for name, row in rows.items()},
            "paired_by_round": paired,
        }
        if not args.manifests_only:
            self.results["proxy_memory_mib"] = self.memory()
            if args.baseline_bin:
                self.results["baseline_memory_mib"] = self.memory(args.baseline_bin)
            self.results["upstream_token_requests"] = self.token_requests(paths["proxy"], concurrency=100)
        return self.results

    def proxy_path(self, port, token, process):
        return {"base": f"http://127.0.0.1:{port}", "prefix": "namespaces/bench/connectors/authed/",
                "auth": ["-u", f"ci:{token}"], "pids": [process.pid], "host": "127.0.0.1", "port": port,
                "headers": {"Authorization": "Basic " + base64.b64encode(f"ci:{token}".encode()).decode()},
                "latency_prefix": "namespaces/bench/connectors/anonymous/"}

    def memory(self, binary=None):
        """A fresh proxy's resident memory: idle, after 1 and 8 blobs pulled one after another, and its
        peak while 8 pulls and 4 pushes run at once."""
        port, token, process = self.proxy(*self.registries, binary=binary)
        path = self.proxy_path(port, token, process)
        self.curl(*path["auth"], "-o", "/dev/null", f"{path['base']}/v2/")
        idle = rss_kib(process.pid)
        self.pull(path, 1)
        after_first = rss_kib(process.pid)
        for _ in range(7):
            self.pull(path, 1)
        after_eight = rss_kib(process.pid)
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            jobs = [pool.submit(self.pull, path, 1) for _ in range(8)]
            jobs += [pool.submit(self.push, path, f"bench/load-{i}", False) for i in range(4)]
            for job in jobs:
                job.result()
        return {"idle": idle / 1024, "after_1x": after_first / 1024, "after_8x": after_eight / 1024,
                "after_load": rss_kib(process.pid) / 1024, "peak": rss_kib(process.pid, "VmHWM") / 1024}

    def token_requests(self, proxy_path, concurrency):
        """Upstream token requests the proxy makes for `concurrency` simultaneous pulls of one image
        (manifest, config and layer) from the token-auth registry."""
        base = f"http://127.0.0.1:{self.registries[2]}"
        realm = f"{self.issuer.realm}?service=bench-registry&scope=repository:bench/tokened:pull,push"
        answer = subprocess.check_output(["curl", "-sf", "-u", f"{USER}:{PASSWORD}", realm], text=True)
        auth = ["-H", "Authorization: Bearer " + json.loads(answer)["token"]]
        config, layer, manifest = self.seed_image(base, "bench/tokened", auth, layer_size=256 * 1024)
        before = self.issuer.requests
        prefix = "/v2/namespaces/bench/connectors/tokened/bench/tokened"
        headers = {**proxy_path["headers"], "Accept": "application/vnd.oci.image.manifest.v1+json"}
        barrier = threading.Barrier(concurrency)

        def pull(_):
            connection = http.client.HTTPConnection("127.0.0.1", proxy_path["port"], timeout=60)
            barrier.wait()
            for target, expected in [("manifests/v1", manifest), (f"blobs/{config}", None), (f"blobs/{layer}", None)]:
                connection.request("GET", f"{prefix}/{target}", headers=headers)
                response = connection.getresponse()
                body = response.read()
                assert response.status == 200, (response.status, body[:200])
                assert expected is None or body == expected
            return True

        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            assert all(pool.map(pull, range(concurrency)))
        return {"pulls": concurrency, "requests": self.issuer.requests - before}

    def nginx_pids(self, name):
        master = int(open(f"{self.work}/{name}.pid").read().strip()) if os.path.exists(f"{self.work}/{name}.pid") else None
        if master is None:
            time.sleep(0.5)
            master = int(open(f"{self.work}/{name}.pid").read().strip())
        children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
        return [master] + [int(pid) for pid in children]

    def seed_image(self, base, repository, auth, layer_size):
        """Pushes a config blob, a layer and an OCI manifest tagged v1; returns both digests and the manifest."""
        path = {"base": base, "prefix": "", "auth": auth}
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        layer = os.urandom(layer_size)
        digests = []
        file = os.path.join(self.work, "seed")
        for blob in (config, layer):
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            location = self.start_upload(path, f"{base}/v2/{repository}")
            open(file, "wb").write(blob)
            self.curl(*auth, "-X", "PUT", "-T", file, "-H", "Content-Type: application/octet-stream", f"{location}&digest={digest}")
            digests.append(digest)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digests[0],
                                          "size": len(config)},
                               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digests[1],
                                           "size": len(layer)}]}).encode()
        open(file, "wb").write(manifest)
        self.curl(*auth, "-X", "PUT", "-T", file, "-H", "Content-Type: application/vnd.oci.image.manifest.v1+json",
                  f"{base}/v2/{repository}/manifests/v1")
        return digests[0], digests[1], manifest

    def cleanup(self):
        if getattr(self, "issuer", None):
            self.issuer.stop()
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(self.work, ignore_errors=True)


METRIC_LABELS = {"p50_ms": "p50", "p99_ms": "p99", "rps": "requests/s", "cpu_us": "server CPU per request",
                 "registry_cpu_us": "registry CPU per request", "client_cpu_us": "curl CPU per request",
                 "total_cpu_us": "CPU per request, all processes",
                 "busy_pct": "both cores busy"}


TARGET_CELL = "HEAD_8"  # manifest HEAD over 8 connections: where the latency target is set


def spread(values):
    """Median, range and count of per-round values."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": len(values)}


def latency_row(paths, key, metric, unit, fmt, label):
    values = [paths[name].get(key, {}).get(metric) for name in ["direct", "nginx-default", "nginx-tuned", "proxy"]]
    cells = ["–" if v is None else fmt.format(v) + unit for v in values]
    p, n, d = values[3], values[2], values[0]
    to_nginx = f"{p / n:.2f}×" if n else "–"
    to_direct = f"{p / d:.2f}×" if d else "–"
    if d and unit == " ms":
        to_direct += f" ({p - d:+.2f} ms)"
    return f"| {label} | " + " | ".join(cells) + f" | {to_nginx} | {to_direct} |"


def table(results):
    paths = results["paths"]
    proxy, nginx, direct = paths["proxy"], paths["nginx-tuned"], paths["direct"]
    lines = ["| figure | direct | nginx default | nginx tuned | proxy | proxy/nginx tuned | proxy/direct |",
             "|---|---:|---:|---:|---:|---:|---:|"]

    def row(label, key, unit="", fmt="{:.0f}"):
        values = [paths[name].get(key) for name in ["direct", "nginx-default", "nginx-tuned", "proxy"]]
        cells = ["–" if v is None else fmt.format(v) + unit for v in values]
        ratio_nginx = f"{proxy[key] / nginx[key]:.2f}×" if nginx.get(key) else "–"
        ratio_direct = f"{proxy[key] / direct[key]:.2f}×" if direct.get(key) else "–"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio_nginx} | {ratio_direct} |")

    row("blob pull, 1 stream (MB/s)", "pull_1")
    row("blob pull, 8 streams total (MB/s)", "pull_8")
    row("blob push, monolithic (MB/s)", "push_mono")
    row("blob push, 64 MiB chunks (MB/s)", "push_chunked")
    row("CPU s per GiB pulled (1 stream)", "cpu_pull", fmt="{:.2f}")
    row("CPU s per GiB pushed (monolithic)", "cpu_push", fmt="{:.2f}")
    row("registry's own CPU s per GiB pushed (monolithic)", "registry_cpu_push", fmt="{:.2f}")
    row("registry's own CPU s per GiB pushed (64 MiB chunks)", "registry_cpu_push_chunked", fmt="{:.2f}")
    row("blob pull from an https registry, 1 stream (MB/s)", "secure_pull_1")
    row("blob pull from an https registry, 8 streams total (MB/s)", "secure_pull_8")
    row("CPU s per GiB pulled from an https registry (1 stream)", "cpu_secure_pull", fmt="{:.2f}")
    for key in sorted((k for k in proxy if k.split("_")[0] in ("HEAD", "GET")), key=lambda k: (k.split("_")[0], int(k.split("_")[1]))):
        method, connections = key.split("_")
        metrics = [("p50_ms", " ms", "{:.2f}"), ("p99_ms", " ms", "{:.2f}"), ("rps", "", "{:.0f}"), ("cpu_us", " µs", "{:.0f}")]
        if connections == "8":  # Where the latency target is set: what each request costs the whole machine.
            metrics += [("registry_cpu_us", " µs", "{:.0f}"), ("client_cpu_us", " µs", "{:.0f}"),
                        ("total_cpu_us", " µs", "{:.0f}"), ("busy_pct", " %", "{:.0f}")]
        for metric, unit, fmt in metrics:
            label = f"manifest {method}, {connections} conns, {METRIC_LABELS.get(metric, metric)}"
            lines.append(latency_row(paths, key, metric, unit, fmt, label))
    local = proxy.get("local_8", {})
    for metric, unit, fmt in [("rps", "", "{:.0f}"), ("cpu_us", " µs", "{:.0f}")]:
        if metric in local:
            label = f"GET /v2/ answered by the server itself, 8 conns, {METRIC_LABELS[metric]}"
            lines.append(latency_row(paths, "local_8", metric, unit, fmt, label))
    memory, tokens = results["proxy_memory_mib"], results["upstream_token_requests"]
    lines.append(
        f"\nproxy RSS (fresh process): idle {memory['idle']:.0f} MiB, after 1 blob pulled {memory['after_1x']:.0f} MiB, "
        f"after 8 {memory['after_8x']:.0f} MiB (growth {memory['after_8x'] - memory['after_1x']:+.0f} MiB); "
        f"peak during 8 pulls + 4 pushes at once {memory['peak']:.0f} MiB ({memory['peak'] - memory['idle']:.0f} MiB above idle)")
    lines.append(f"upstream token requests for {tokens['pulls']} concurrent pulls of one image: {tokens['requests']}")
    lines.append(f"blob {results['size_mib']} MiB, medians of {results['rounds']} rounds")
    paired = results.get("paired_by_round", {})
    if paired:
        lines.append("\nmanifest cells, paired by round (each round's paths measured back to back): median [range]")
        for key in sorted(paired, key=lambda k: (k.split("_")[0], int(k.split("_")[1]) if k.split("_")[1].isdigit() else 0)):
            entry, parts = paired[key], []
            ratio = entry["rps_proxy_to_nginx"]
            parts.append(f"requests/s proxy/nginx {ratio['median']:.2f}× [{ratio['min']:.2f}–{ratio['max']:.2f}], "
                         f"at least nginx's in {ratio['rounds_at_least_nginx']}")
            for metric, label in [("p50_ms_proxy_over_direct", "p50 proxy−direct"), ("p50_ms_nginx_over_direct", "nginx−direct")]:
                if metric in entry:
                    value = entry[metric]
                    parts.append(f"{label} {value['median']:+.2f} ms [{value['min']:+.2f}–{value['max']:+.2f}]")
            if "rps_proxy_to_baseline" in entry:
                value = entry["rps_proxy_to_baseline"]
                parts.append(f"requests/s proxy/baseline {value['median']:.2f}× [{value['min']:.2f}–{value['max']:.2f}]")
            lines.append(f"- {key}{' (target cell)' if key == TARGET_CELL else ''}, {ratio['rounds']} rounds: " + "; ".join(parts))
    if "baseline" in paths:
        lines.append("\n" + comparison(results))
    return "\n".join(lines)


def comparison(results):
    """The measured proxy against the baseline binary, figure by figure: medians of the same rounds."""
    paths = results["paths"]
    proxy, baseline = paths["proxy"], paths["baseline"]
    lines = ["| figure | baseline | proxy | proxy/baseline |", "|---|---:|---:|---:|"]

    def row(label, before, after, fmt="{:.0f}", unit=""):
        if before is None or after is None:
            return
        ratio = f"{after / before:.2f}×" if before else "–"
        lines.append(f"| {label} | {fmt.format(before)}{unit} | {fmt.format(after)}{unit} | {ratio} |")

    for key, label, fmt in [("pull_1", "blob pull, 1 stream (MB/s)", "{:.0f}"), ("pull_8", "blob pull, 8 streams (MB/s)", "{:.0f}"),
                            ("push_mono", "blob push, monolithic (MB/s)", "{:.0f}"),
                            ("push_chunked", "blob push, 64 MiB chunks (MB/s)", "{:.0f}"),
                            ("cpu_pull", "CPU s per GiB pulled", "{:.2f}"), ("cpu_push", "CPU s per GiB pushed", "{:.2f}"),
                            ("secure_pull_1", "https pull, 1 stream (MB/s)", "{:.0f}"),
                            ("cpu_secure_pull", "CPU s per GiB pulled from https", "{:.2f}")]:
        row(label, baseline.get(key), proxy.get(key), fmt)
    for key in sorted((k for k in proxy if k.split("_")[0] in ("HEAD", "GET", "local")),
                      key=lambda k: (k.split("_")[0], int(k.split("_")[1]))):
        for metric, unit, fmt in [("p50_ms", " ms", "{:.2f}"), ("p99_ms", " ms", "{:.2f}"), ("rps", "", "{:.0f}"),
                                  ("cpu_us", " µs", "{:.0f}")]:
            row(f"{key} {METRIC_LABELS.get(metric, metric)}", baseline.get(key, {}).get(metric), proxy.get(key, {}).get(metric), fmt, unit)
    before, after = results.get("baseline_memory_mib", {}), results["proxy_memory_mib"]
    for key in ["idle", "after_8x", "peak"]:
        row(f"RSS {key} (MiB)", before.get(key), after.get(key))
    return "\n".join(lines)


def manifest_table(results):
    """The manifest cells alone: each path's CPU per request, requests/s and p50, per cell."""
    lines = ["| cell | path | server CPU µs/request | requests/s | p50 ms |", "|---|---|---:|---:|---:|"]
    for name, row in results["paths"].items():
        for key, cell in sorted(row.items()):
            if isinstance(cell, dict):
                cpu = f"{cell['cpu_us']:.0f}" if "cpu_us" in cell else "–"
                lines.append(f"| {key} | {name} | {cpu} | {cell['rps']:.0f} | {cell['p50_ms']:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--latency-requests", type=int, default=4000,
                        help="manifest requests per cell and path, split over the rounds")
    parser.add_argument("--target-rounds", type=int, default=6,
                        help=f"rounds of the {TARGET_CELL} cell (at least 1000 requests each), paired by round")
    parser.add_argument("--proxy-bin", default=".build/release/oci-connector-proxy")
    parser.add_argument("--config-bin", default=".build/release/oci-connector-config")
    parser.add_argument("--baseline-bin", help="another oci-connector-proxy build to measure in the same rounds (before/after)")
    parser.add_argument("--manifests-only", action="store_true",
                        help="only the manifest and `/v2/` cells: CPU per request, requests/s and latency, in minutes")
    parser.add_argument("--out", default="Benchmarks/EndToEnd/results.json")
    args = parser.parse_args()
    bench = Bench(args)
    minutes = 25 if args.baseline_bin else 15
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError(f"benchmark took over {minutes} minutes")))
    signal.alarm(minutes * 60)
    try:
        results = bench.run()
    finally:
        bench.cleanup()
    print(manifest_table(results) if args.manifests_only else table(results))
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()

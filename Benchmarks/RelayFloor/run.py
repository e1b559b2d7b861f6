#!/usr/bin/env python3
"""What a manifest `HEAD` costs a relay on SwiftNIO at the least, beside nginx and the proxy.

An upstream that costs almost nothing (nginx serving a manifest from a file) keeps the registry
out of the figures. In front of it, in alternating rounds of `curl --parallel` over 8 keep-alive
connections: nginx relaying with an injected `Authorization` (as the end-to-end harness sets it
up), the proxy, and `relay-floor relay-raw` (`HEAD`s; nginx and the proxy also `GET`s); and,
answering `/v2/` themselves, nginx, the proxy, `relay-floor static-raw` and `static-codec`.
Prints each one's CPU per request (user and system, from /proc in 10 ms ticks: about 2 µs per
request at 5000 requests a round) and requests/s. About 4 minutes; cleans up after itself. With `--baseline-bin` (an earlier build of
the proxy), that one is measured beside it too, and each round's CPU of the two is compared.

With `--upstream registry` the upstream is the real anonymous `docker-registry` instead, as in the
end-to-end harness's manifest cells, and the registry is also asked directly: then each cell also
reports what the registry and curl spent per request and the p50, so that the proxy, nginx and
`relay-raw` are compared where the registry shares the two cores with them.
Run from the repository root, after `swift build -c release` there:

    (cd Benchmarks/RelayFloor && swift build -c release) && python3 Benchmarks/RelayFloor/run.py
"""
import argparse
import base64
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "EndToEnd"))
import bench as B  # noqa: E402  (free_port, wait_port, nginx_relay_directives)

MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


def ticks(pids):
    """User and system CPU seconds of `pids`, from /proc/PID/task/*/stat."""
    user = system = 0
    for pid in pids:
        for task in os.listdir(f"/proc/{pid}/task"):
            fields = open(f"/proc/{pid}/task/{task}/stat").read().rsplit(")", 1)[1].split()
            user, system = user + int(fields[11]), system + int(fields[12])
    hz = os.sysconf("SC_CLK_TCK")
    return user / hz, system / hz


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.path.abspath(os.path.join(HERE, "..", ".."))
    parser.add_argument("--proxy-bin", default=os.path.join(root, ".build/release/oci-connector-proxy"))
    parser.add_argument("--config-bin", default=os.path.join(root, ".build/release/oci-connector-config"))
    parser.add_argument("--floor-bin", default=os.path.join(HERE, ".build/release/relay-floor"))
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--baseline-bin", help="a second proxy binary (an earlier build) measured beside the first, "
                        "with each round's CPU per request of the two compared")
    parser.add_argument("--upstream", choices=["nginx", "registry"], default="nginx",
                        help="what the relays relay to: nginx serving a file (the default), or the real registry")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    on_registry = args.upstream == "registry"
    registries = B.Bench(args) if on_registry else None  # starts and seeds the registry, removes it after
    work = tempfile.mkdtemp(prefix="relay-floor-")
    os.chmod(work, 0o755)  # nginx's workers read the manifest file as another user
    processes = []

    def start(argv):
        processes.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return processes[-1]

    try:
        upstream, relay, proxy_port, baseline_port = B.free_port(), B.free_port(), B.free_port(), B.free_port()
        static_port = upstream
        if on_registry:
            upstream = registries.registry("anonymous", htpasswd=False)
            static_port = B.free_port()  # nginx's file server is not the upstream then
            registries.seed_image(f"http://127.0.0.1:{upstream}", "bench/small", [], layer_size=1024)
            registry_pids = list(registries.registry_pids.values())
        else:
            registry_pids = []
        floor = {name: B.free_port() for name in ("relay-raw", "static-raw", "static-codec")}
        open(os.path.join(work, "manifest.json"), "wb").write(MANIFEST)
        temp = " ".join(f"{kind}_temp_path {work}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        version = 'add_header Docker-Distribution-Api-Version registry/2.0;'
        basic = base64.b64encode(b"bench:bench-secret").decode()
        relaying = B.nginx_relay_directives(tuned=True)  # the end-to-end harness's tuned nginx
        open(os.path.join(work, "nginx.conf"), "w").write(f"""
worker_processes 2; daemon off; pid {work}/nginx.pid; error_log {work}/nginx.err error;
events {{ worker_connections 1024; }}
http {{ access_log off; {temp}
  upstream registry {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{ listen 127.0.0.1:{static_port};
    location = /v2/ {{ default_type application/json; {version} return 200 "{{}}"; }}
    location = /v2/bench/small/manifests/v1 {{ alias {work}/manifest.json; default_type application/vnd.oci.image.manifest.v1+json;
      add_header Docker-Content-Digest {DIGEST}; {version} add_header Etag '"{DIGEST}"'; add_header X-Content-Type-Options nosniff; }} }}
  server {{ listen 127.0.0.1:{relay};
    location = /v2/ {{ default_type application/json; {version} return 200 "{{}}"; }}
    location /v2/ {{ proxy_pass http://registry; proxy_set_header Authorization "Basic {basic}"; {relaying} }} }} }}
""")
        nginx = start(["nginx", "-c", os.path.join(work, "nginx.conf")])
        keys = os.path.join(work, "keys")
        subprocess.check_call([args.config_bin, "keys", "generate", "--out", keys], stdout=subprocess.DEVNULL)
        open(os.path.join(work, "connectors.yaml"), "w").write(
            f'kind: Connector\nmetadata: {{name: cheap, namespace: bench}}\nspec: {{address: "http://127.0.0.1:{upstream}"}}\n')
        def proxy_process(binary, port):
            return start([binary, "--connectors", os.path.join(work, "connectors.yaml"), "--listen", f"127.0.0.1:{port}",
                          "--token-keys", f"{keys}/verification-key.jwk", "--log-level", "warning"])
        proxy = proxy_process(args.proxy_bin, proxy_port)
        baseline = proxy_process(args.baseline_bin, baseline_port) if args.baseline_bin else None
        prefix = "/namespaces/bench/connectors/cheap"
        floors = {name: start([args.floor_bin, name, str(port), str(upstream), prefix]) for name, port in floor.items()}
        for port in [upstream, relay, proxy_port, *floor.values(), *([baseline_port] if baseline else [])]:
            B.wait_port(port)
        token = subprocess.check_output([args.config_bin, "token", "--connector", "bench/cheap", "--actions", "pull", "--ttl", "1h",
                                         "--signing-key", f"{keys}/signing-key.jwk"], text=True).strip()
        auth = "Basic " + base64.b64encode(f"bench:{token}".encode()).decode()
        manifest = "/bench/small/manifests/v1"
        nginx_pids = [nginx.pid] + [int(p) for p in subprocess.check_output(["pgrep", "-P", str(nginx.pid)], text=True).split()]
        cells = {
            "HEAD relayed: nginx": (relay, "/v2" + manifest, nginx_pids),
            "HEAD relayed: proxy": (proxy_port, "/v2" + prefix + manifest, [proxy.pid]),
            "HEAD relayed: relay-raw": (floor["relay-raw"], "/v2" + prefix + manifest, [floors["relay-raw"].pid]),
            "GET relayed: nginx": (relay, "/v2" + manifest, nginx_pids),
            "GET relayed: proxy": (proxy_port, "/v2" + prefix + manifest, [proxy.pid]),
            "/v2/ answered: nginx": (relay, "/v2/", nginx_pids),
            "/v2/ answered: proxy": (proxy_port, "/v2/", [proxy.pid]),
            "/v2/ answered: static-raw": (floor["static-raw"], "/v2/", [floors["static-raw"].pid]),
            "/v2/ answered: static-codec": (floor["static-codec"], "/v2/", [floors["static-codec"].pid]),
        }
        if on_registry:
            # The registry asked directly, and only what reaches it: `/v2/` answered by each server
            # itself is measured against the cheap upstream alone.
            cells = {"HEAD direct": (upstream, "/v2" + manifest, []), "GET direct": (upstream, "/v2" + manifest, []),
                     **{name: cell for name, cell in cells.items() if not name.startswith("/v2/")}}
        if baseline:
            cells["HEAD relayed: proxy (baseline)"] = (baseline_port, "/v2" + prefix + manifest, [baseline.pid])
            cells["GET relayed: proxy (baseline)"] = (baseline_port, "/v2" + prefix + manifest, [baseline.pid])
            if not on_registry:
                cells["/v2/ answered: proxy (baseline)"] = (baseline_port, "/v2/", [baseline.pid])
        results = {name: [] for name in cells}
        for round in range(args.rounds + 1):  # the first round warms up and is not counted
            for name in (list(cells) if round % 2 == 0 else list(reversed(cells))):
                port, path, pids = cells[name]
                config = os.path.join(work, f"{port}{path.replace('/', '_')}.cfg")
                if not os.path.exists(config):
                    open(config, "w").write(f'url = "http://127.0.0.1:{port}{path}"\noutput = "/dev/null"\n' * args.requests)
                argv = ["curl", "-s", "--parallel", "--parallel-max", str(args.connections), "-K", config,
                        "-H", f"Authorization: {auth}", "-H", "Accept: application/vnd.oci.image.manifest.v1+json",
                        "-w", "%{http_code} %{time_total}\\n"]
                if not name.startswith("GET"):  # `/v2/` too, as the version check clients send
                    argv.append("-I")
                (user0, system0), start_time = ticks(pids), time.perf_counter()
                registry0, client0 = B.cpu_seconds(registry_pids), B.children_cpu_seconds()
                out = subprocess.run(argv, capture_output=True, text=True, timeout=300).stdout
                elapsed, (user1, system1) = time.perf_counter() - start_time, ticks(pids)
                registry_cpu, client_cpu = B.cpu_seconds(registry_pids) - registry0, B.children_cpu_seconds() - client0
                lines = [line.split() for line in out.splitlines()]
                codes = {line[0] for line in lines}
                assert len(lines) == args.requests and codes == {"200"}, (name, codes)
                times = sorted(float(line[1]) for line in lines)
                if round:
                    results[name].append({
                        "user": (user1 - user0) / args.requests * 1e6, "system": (system1 - system0) / args.requests * 1e6,
                        "rps": args.requests / elapsed, "p50": times[len(times) // 2] * 1e3,
                        "registry": registry_cpu / args.requests * 1e6, "curl": client_cpu / args.requests * 1e6})
        if on_registry:
            print("| path | server CPU µs per request | user | system | registry CPU µs | curl CPU µs | requests/s | p50 ms |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
        else:
            print("| server | CPU µs per request | user | system | requests/s |")
            print("|---|---:|---:|---:|---:|")
        for name, rows in results.items():
            def median(key):
                return statistics.median(r[key] for r in rows)
            total = statistics.median(r["user"] + r["system"] for r in rows)
            line = f"| {name} | {total:.0f} | {median('user'):.0f} | {median('system'):.0f} |"
            if on_registry:
                line += f" {median('registry'):.0f} | {median('curl'):.0f} | {median('rps'):.0f} | {median('p50'):.2f} |"
            else:
                line += f" {median('rps'):.0f} |"
            print(line)

        def paired(title, pairs, costs):
            # Paired by round: the two were measured minutes apart at most, so the host's drift
            # over the run falls on both alike.
            print(f"\n{title}:")
            for new_name, old_name in pairs:
                new, old = results.get(new_name), results.get(old_name)
                if not new or not old:
                    continue
                for label, cost in costs:
                    ratios = sorted(cost(a) / cost(b) for a, b in zip(new, old) if cost(b) > 0)
                    if ratios:
                        print(f"  {new_name} / {old_name}, {label}: {statistics.median(ratios):.3f}× "
                              f"(rounds {ratios[0]:.3f}–{ratios[-1]:.3f}; less in {sum(r < 1 for r in ratios)} of {len(ratios)})")

        cpu_costs = [("all", lambda r: r["user"] + r["system"]), ("user", lambda r: r["user"])]
        if on_registry:
            rate = [("requests/s", lambda r: r["rps"]),
                    ("CPU of all processes per request", lambda r: r["user"] + r["system"] + r["registry"] + r["curl"])]
            paired("Against nginx in the same round", [(f"{method} relayed: {server}", f"{method} relayed: nginx")
                                                       for method in ("HEAD", "GET") for server in ("proxy", "relay-raw")],
                   rate + cpu_costs)
        if baseline:
            # System time moves with the host far more than user time, which is what a change to
            # the proxy's own code moves: both are compared.
            paired("proxy / baseline, CPU per request in the same round",
                   [(f"{cell}: proxy", f"{cell}: proxy (baseline)") for cell in ("HEAD relayed", "GET relayed", "/v2/ answered")],
                   cpu_costs + ([("requests/s", lambda r: r["rps"])] if on_registry else []))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)
        if registries:
            registries.cleanup()


if __name__ == "__main__":
    main()

"""Many clients pulling and pushing through the proxy at once, for a while; prints one JSON
object: operations done and failed (with the first failures), and the proxy's peak resident
memory. Never reaches beyond loopback.

Usage: load.py PORT PREFIX CLIENTS SECONDS PROXY-PID MANIFEST-PATH BLOB-DIGEST   (the proxy token on stdin)
  PREFIX: /v2/namespaces/NS/connectors/NAME/REPOSITORY, whose MANIFEST-PATH (tag) and blob exist.
Half the clients pull (manifest, then the blob, its digest checked), half push (a fresh 64 KiB
blob each time: upload start, then the body with its digest).
"""
import base64
import hashlib
import http.client
import json
import os
import sys
import threading
import time


def resident_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1])


def main():
    port, prefix, clients, seconds, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    manifest_path, blob_digest = sys.argv[6], sys.argv[7]
    token = sys.stdin.read().strip()
    headers = {"Authorization": "Basic " + base64.b64encode(f"load:{token}".encode()).decode()}
    lock = threading.Lock()
    counts = {"pulls": 0, "pushes": 0, "errors": 0}
    failures = []
    deadline = time.monotonic() + seconds

    def failed(what):
        with lock:
            counts["errors"] += 1
            if len(failures) < 10:
                failures.append(what)

    def pull():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.monotonic() < deadline:
            try:
                connection.request("GET", f"{prefix}/manifests/{manifest_path}", headers={
                    **headers, "Accept": "application/vnd.oci.image.manifest.v1+json"})
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    failed(f"manifest {response.status}")
                    continue
                connection.request("GET", f"{prefix}/blobs/{blob_digest}", headers=headers)
                response = connection.getresponse()
                body = response.read()
                if response.status != 200 or "sha256:" + hashlib.sha256(body).hexdigest() != blob_digest:
                    failed(f"blob {response.status} {len(body)} bytes")
                    continue
                with lock:
                    counts["pulls"] += 1
            except Exception as error:  # a failed exchange, counted; the client reconnects
                failed(f"pull {type(error).__name__}: {error}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def push():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.monotonic() < deadline:
            try:
                body = os.urandom(64 * 1024)
                digest = "sha256:" + hashlib.sha256(body).hexdigest()
                connection.request("POST", f"{prefix}/blobs/uploads/", headers={**headers, "Content-Length": "0"})
                response = connection.getresponse()
                response.read()
                location = response.getheader("Location")
                if response.status != 202 or not location:
                    failed(f"upload start {response.status}")
                    continue
                if location.startswith("http"):
                    location = "/" + location.split("/", 3)[3]
                separator = "&" if "?" in location else "?"
                connection.request("PUT", f"{location}{separator}digest={digest}", body=body, headers={
                    **headers, "Content-Type": "application/octet-stream"})
                response = connection.getresponse()
                response.read()
                if response.status != 201:
                    failed(f"upload {response.status}")
                    continue
                with lock:
                    counts["pushes"] += 1
            except Exception as error:
                failed(f"push {type(error).__name__}: {error}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    before = resident_kib(pid)
    peak = [before]
    threads = [threading.Thread(target=pull if index % 2 == 0 else push) for index in range(clients)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        peak[0] = max(peak[0], resident_kib(pid))
        time.sleep(0.2)
    for thread in threads:
        thread.join()
    print(json.dumps({**counts, "failures": failures, "resident_before_kib": before, "resident_peak_kib": peak[0],
                      "seconds": seconds, "clients": clients}))


if __name__ == "__main__":
    main()

"""Pushes an artifact through the proxy with the oras Python client, pulls it back, compares.

Usage: oras_roundtrip.py PROXY_HOST REPOSITORY_PREFIX WORKDIR  (the proxy token on standard input)
"""
import filecmp
import os
import sys

import oras.client


def main() -> int:
    host, prefix, workdir = sys.argv[1:4]
    # "basic" sends the credentials on every request; "token" follows the proxy's Bearer
    # challenges to its token endpoint.
    backend = sys.argv[4] if len(sys.argv) > 4 else "basic"
    token = sys.stdin.read().strip()
    artifact = os.path.join(workdir, "artifact.bin")
    with open(artifact, "wb") as handle:
        handle.write(os.urandom(3 * 1024 * 1024 + 17))

    client = oras.client.OrasClient(hostname=host, insecure=True, auth_backend=backend)
    client.login(username="workload", password=token, hostname=host, tls_verify=False)

    os.chdir(workdir)
    for tag, chunked in (("plain", False), ("chunked", True)):
        target = f"{host}/{prefix}/oras/artifact:{tag}"
        response = client.push(files=["artifact.bin"], target=target, do_chunked=chunked, chunk_size=1024 * 1024)
        if response.status_code not in (200, 201):
            print(f"push {tag}: HTTP {response.status_code}: {response.text}")
            return 1
        outdir = os.path.join(workdir, f"pulled-{tag}")
        files = client.pull(target=target, outdir=outdir)
        pulled = [path for path in files if path.endswith("artifact.bin")]
        if not pulled or not filecmp.cmp(pulled[0], artifact, shallow=False):
            print(f"pull {tag}: content differs or missing: {files}")
            return 1
        if tag not in client.get_tags(f"{host}/{prefix}/oras/artifact"):
            print(f"tags: {tag} missing")
            return 1
    print("oras round trip ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Checks Examples/kubernetes against the Kubernetes schemas and against the built executables.

usage: check_kubernetes_examples.py EXAMPLES_DIR BIN_DIR

- every document validates (kubernetes-validate, strict: no unknown fields);
- every flag a container passes to oci-connector-proxy or oci-connector-config render is one
  that executable's --help lists;
- the proxy's probes use the admin port and the paths it serves, its container ports are the
  ports of --listen and --admin-listen, the Service targets ports the pod names, and every file
  a flag names lies under a mounted volume;
- the proxy runs as non-root with a read-only root filesystem.
Prints one JSON object: {"documents": N, "problems": [...]}.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

examples, binaries = Path(sys.argv[1]), Path(sys.argv[2])
problems = []

files = sorted(examples.glob("*.yaml"))
validated = subprocess.run(["kubernetes-validate", "--strict", "--quiet", *map(str, files)], capture_output=True, text=True)
if validated.returncode != 0:
    problems.append("kubernetes-validate: " + (validated.stdout + validated.stderr).strip())

documents = [doc for file in files for doc in yaml.safe_load_all(file.read_text()) if doc]


def help_flags(*command):
    text = subprocess.run([str(binaries / command[0]), *command[1:], "--help"], capture_output=True, text=True).stdout
    return set(re.findall(r"--[a-z][a-z0-9-]*", text))


proxy_flags = help_flags("oci-connector-proxy")
render_flags = help_flags("oci-connector-config", "render")


def flag_values(args):
    values = {}
    for arg in args:
        if arg.startswith("--"):
            name, _, value = arg.partition("=")
            values[name] = value
    return values


def pod_specs():
    for doc in documents:
        spec = doc.get("spec", {})
        template = spec.get("template", {}).get("spec")
        if template:
            yield doc, template


def covered(path, mounts):
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


services = [d for d in documents if d["kind"] == "Service"]
for doc, pod in pod_specs():
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        args = container.get("args", [])
        image = container.get("image", "")
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        if "oci-connector-proxy" in image:
            flags = flag_values(args)
            for name in flags:
                if name not in proxy_flags:
                    problems.append(f"{doc['metadata']['name']}: oci-connector-proxy has no {name}")
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            listen = int(flags.get("--listen", ":0").rsplit(":", 1)[1])
            admin = int(flags.get("--admin-listen", ":0").rsplit(":", 1)[1])
            if listen not in ports.values():
                problems.append(f"--listen port {listen} is not a container port {ports}")
            if admin not in ports.values() or admin == listen:
                problems.append(f"--admin-listen port {admin} is not a container port of its own {ports}")
            for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
                get = container.get(probe, {}).get("httpGet", {})
                port = ports.get(get.get("port"), get.get("port"))
                if get.get("path") != path or port != admin:
                    problems.append(f"{probe} must GET {path} on the admin port {admin}, not {get}")
            for name in ["--tls-cert", "--tls-key", "--token-keys", "--token-signing-key", "--connectors"]:
                if name in flags and not covered(flags[name], mounts):
                    problems.append(f"{name}={flags[name]} is not under a mounted volume {mounts}")
            security = container.get("securityContext", {})
            if not security.get("readOnlyRootFilesystem") or not pod.get("securityContext", {}).get("runAsNonRoot"):
                problems.append("the proxy must run as non-root with a read-only root filesystem")
            for service in services:
                for port in service["spec"]["ports"]:
                    if port["targetPort"] not in ports and port["targetPort"] not in ports.values():
                        problems.append(f"Service port {port['name']} targets {port['targetPort']}, not a pod port")
        if "oci-connector-config" in image and args[:1] == ["render"]:
            flags = flag_values(args[1:])
            for name in flags:
                if name not in render_flags:
                    problems.append(f"{doc['metadata']['name']}: render has no {name}")
            for name in ["--signing-key", "--token-file", "--ca-file", "--connectors", "--output"]:
                if name in flags and not covered(flags[name], mounts):
                    problems.append(f"render {name}={flags[name]} is not under a mounted volume {mounts}")

print(json.dumps({"documents": len(documents), "problems": problems}))

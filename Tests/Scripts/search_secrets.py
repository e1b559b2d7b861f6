"""Searches what the end-to-end suite left as evidence (OCI_CONNECTOR_TEST_EVIDENCE) for secrets:
every password, upstream token, refresh token and client token the tests made (DIR/secrets) in
the log of every proxy they ran (DIR/*.log), every answer curl received (DIR/responses.txt) and
what every registry client printed with --debug (DIR/clients.txt). A JWT is also looked for by its signature alone, so
a token cut or re-encoded around it is found too. Prints what it searched; exits 1, naming the
log, the line and the kind of secret (never the secret), if any is found.

Usage: search_secrets.py DIR
"""
import os
import sys


def main():
    directory = sys.argv[1]
    try:
        with open(os.path.join(directory, "secrets")) as file:
            secrets = {line.rstrip("\n") for line in file if line.strip()}
    except FileNotFoundError:
        secrets = set()
    needles = {}
    for secret in secrets:
        parts = secret.split(".")
        if len(parts) == 3 and all(parts):  # a JWT: the whole, and its signature alone
            needles[secret] = "a token"
            if len(parts[2]) >= 16:
                needles[parts[2]] = "a token's signature"
        elif len(secret) >= 8:
            needles[secret] = "a password or refresh token"
    logs = sorted(
        name for name in os.listdir(directory) if name.endswith(".log") or name in ("responses.txt", "clients.txt"))
    if not needles or not logs:
        print(f"secret search: nothing to search ({len(needles)} secrets, {len(logs)} proxy logs)")
        return 1
    found, lines = [], 0
    for name in logs:
        with open(os.path.join(directory, name), errors="replace") as log:
            for number, line in enumerate(log, 1):
                lines += 1
                for needle, kind in needles.items():
                    if needle in line:
                        found.append(f"{name}:{number}: {kind} ({len(needle)} characters, starting {needle[:3]!r})")
    print(f"secret search: {len(secrets)} secrets made by the tests, {len(logs)} proxy logs and answers, {lines} lines: "
          f"{len(found)} found")
    for finding in found[:20]:
        print("  " + finding)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

"""Checks docker-compose.yml parses and names the services Paddock ships
(Docker does not run on the CI machines, so the file is validated, not run)."""

import sys

import yaml

REQUIRED = {"postgres", "minio", "minio-bucket", "hub-migrate", "hub-api", "hub-worker"}

with open(sys.argv[1] if len(sys.argv) > 1 else "docker-compose.yml") as f:
    doc = yaml.safe_load(f)
services = doc.get("services") or {}
missing = REQUIRED - set(services)
if missing:
    sys.exit(f"docker-compose.yml: missing services {sorted(missing)}")
for name, svc in services.items():
    if "image" not in svc and "build" not in svc:
        sys.exit(f"docker-compose.yml: service {name} has neither image nor build")
    for dep in (svc.get("depends_on") or {}):
        if dep not in services:
            sys.exit(f"docker-compose.yml: {name} depends on unknown service {dep}")
if services["hub-migrate"].get("command") != ["migrate"]:
    sys.exit("docker-compose.yml: hub-migrate must run `hub-api migrate`")
print(f"docker-compose.yml: ok ({len(services)} services)")

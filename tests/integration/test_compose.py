"""docker-compose.yml and its Mosquitto config, checked without a Docker engine.

Two layers:
- the Compose CLI (`docker compose` v2 or `docker-compose`) parses, interpolates and
  schema-checks the file with `config`, which needs no daemon. A missing CLI is a failure, not
  a skip: `scripts/ensure-compose-validator.sh` installs one.
- assertions on the parsed YAML for what the delivery guarantees and the contract depend on:
  durable Redis and Mosquitto, the shared app environment, one-shot migrations, scalable workers,
  the process commands of CONTRACT.md;
- and for what keeps it safe (issue 12): no secret has a default, each missing one is named, the
  admin surfaces are on the host's loopback unless an operator opts in, Redis needs a password,
  and each process logs in to PostgreSQL as its own role, never as the superuser.

Not marked `integration`: it starts no server and runs in seconds. It lives here because it
runs an external tool.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
MOSQUITTO_DIR = ROOT / "deploy" / "mosquitto"
ENSURE_SCRIPT = "scripts/ensure-compose-validator.sh"

APP_SERVICES = ("migrate", "listener", "worker", "beat", "flower")
IMAGE_SERVICES = (*APP_SERVICES, "mqtt-init", "dlq")
LONG_RUNNING = ("mqtt", "redis", "db", "listener", "worker", "beat", "flower", "celery-exporter",
                "prometheus", "grafana")
# Every secret `docker compose` needs, each given a value no one would type, so that a test can
# find where each one went. The MQTT ones are files (dynsec's scheme): the value is a path.
SECRETS = {
    "POSTGRES_PASSWORD": "pgsuper0a1b",
    "TRAKSENSE_OWNER_PASSWORD": "owner2c3d",
    "TRAKSENSE_WORKER_PASSWORD": "worker4e5f",
    "TRAKSENSE_DLQ_PASSWORD": "dlq6a7b",
    "REDIS_PASSWORD": "redis8c9d",
    "FLOWER_BASIC_AUTH": "ops:flower0e1f",
    "GRAFANA_ADMIN_PASSWORD": "grafana2a3b",
    "MQTT_ADMIN_PASSWORD_FILE": "/run/operator/mqtt-admin-password",
    "MQTT_ADMIN_URL_FILE": "/run/operator/mqtt-admin-url",
    "MQTT_LISTENER_URL_FILE": "/run/operator/mqtt-listener-url",
    "MQTT_TLS_DIR": "/run/operator/mqtt-tls",
}
BROKER_URL = f"redis://:{SECRETS['REDIS_PASSWORD']}@redis:6379/0"
SHARED_ENV = {"LOG_FORMAT": "json"}
CELERY_SERVICES = ("listener", "worker", "beat", "flower")  # the only app processes given Redis
# Who logs in to PostgreSQL, as whom; every other service has no DATABASE_URL at all.
DATABASE_LOGINS = {
    "migrate": f"postgresql://traksense_owner:{SECRETS['TRAKSENSE_OWNER_PASSWORD']}@db:5432/traksense",
    "worker": f"postgresql://traksense_worker:{SECRETS['TRAKSENSE_WORKER_PASSWORD']}@db:5432/traksense",
    "dlq": f"postgresql://traksense_dlq:{SECRETS['TRAKSENSE_DLQ_PASSWORD']}@db:5432/traksense",
}
# The development passwords the stack once shipped with: none may come back.
OLD_DEFAULTS = ("traksense-dev", "change-me")
# Published on every interface by design: devices connect there (with credentials).
DEVICE_PORTS = {"1883", "8883"}
CONTRACT_COMMANDS = {
    "migrate": ["python", "-m", "migrations"],
    "listener": ["python", "-m", "listener"],
    "worker": ["celery", "-A", "ingest_tasks", "worker"],
    "beat": ["celery", "-A", "ingest_tasks", "beat"],
    "flower": ["celery", "-A", "ingest_tasks", "flower"],
}


# --- helpers ----------------------------------------------------------------------------------


def compose_cli() -> list[str]:
    """The first Compose CLI that runs here; fails the test when there is none."""
    candidates = [["docker", "compose"], ["docker-compose"]]
    for cli in candidates:
        if shutil.which(cli[0]) is None:
            continue
        probe = subprocess.run([*cli, "version"], capture_output=True, timeout=60, check=False)
        if probe.returncode == 0:
            return cli
    pytest.fail(
        "no Docker Compose CLI found (neither `docker compose` nor `docker-compose`): "
        f"run {ENSURE_SCRIPT} to install one"
    )


def run_compose(file: Path, *args: str, extra_env: dict[str, str] | None = None,
                secrets: dict[str, str] = SECRETS) -> subprocess.CompletedProcess[str]:
    # A clean environment and an empty env file (instead of a developer's .env next to the
    # compose file): the outcome must not depend on what happens to be set on this machine.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    env.update(secrets)
    env.update(extra_env or {})
    with tempfile.TemporaryDirectory() as scratch:
        empty_env = Path(scratch) / "empty.env"
        empty_env.touch()
        return subprocess.run(
            [*compose_cli(), "-f", str(file), "--project-directory", str(file.parent),
             "--env-file", str(empty_env), *args],
            capture_output=True, text=True, timeout=120, check=False, env=env, cwd=file.parent,
        )


@cache
def resolved() -> dict[str, Any]:
    """The services as `docker compose config` resolves them with every secret given."""
    result = run_compose(COMPOSE_FILE, "config")
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = yaml.safe_load(result.stdout)["services"]
    return services


def host_bindings(svc: dict[str, Any]) -> list[tuple[str, str]]:
    """(host address, published port) of a resolved service, in either CLI's output format."""
    bindings = []
    for port in svc.get("ports", []):
        if isinstance(port, dict):
            bindings.append((str(port.get("host_ip", "0.0.0.0")), str(port["published"])))
            continue
        parts = str(port).split("/")[0].split(":")
        bindings.append((parts[0] if len(parts) == 3 else "0.0.0.0", parts[-2]))
    return bindings


@cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return loaded


def service(name: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return services[name]


def as_mapping(env: dict[str, str] | list[str]) -> dict[str, str]:
    if isinstance(env, dict):
        return {k: str(v) for k, v in env.items()}
    pairs = (item.partition("=") for item in env)
    return {key: value for key, _, value in pairs}


def command_of(svc: dict[str, Any]) -> list[str]:
    cmd = svc["command"]
    return cmd.split() if isinstance(cmd, str) else [str(part) for part in cmd]


def published_ports(svc: dict[str, Any]) -> list[str]:
    return [str(p) for p in svc.get("ports", [])]


def mosquitto_conf() -> dict[str, list[str]]:
    """Option name -> the values it is given (an option may repeat), comments skipped."""
    options: dict[str, list[str]] = {}
    for line in (MOSQUITTO_DIR / "mosquitto.conf").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, value = line.strip().partition(" ")
        options.setdefault(name, []).append(value.strip())
    return options


def iter_depends(svc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    deps = svc.get("depends_on", {})
    if isinstance(deps, list):
        yield from ((d, "service_started") for d in deps)
    else:
        yield from ((d, spec.get("condition", "service_started")) for d, spec in deps.items())


# --- the Compose CLI --------------------------------------------------------------------------


def test_compose_cli_accepts_the_file() -> None:
    result = run_compose(COMPOSE_FILE, "config", "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", SECRETS)
def test_compose_cli_names_a_missing_secret(missing: str) -> None:
    given = {name: value for name, value in SECRETS.items() if name != missing}
    result = run_compose(COMPOSE_FILE, "config", "-q", secrets=given)
    assert result.returncode != 0
    assert f"set {missing} " in result.stderr, result.stderr


@pytest.mark.parametrize("missing", SECRETS)
def test_compose_cli_refuses_an_empty_secret(missing: str) -> None:
    result = run_compose(COMPOSE_FILE, "config", "-q", secrets={**SECRETS, missing: ""})
    assert result.returncode != 0
    assert f"set {missing} " in result.stderr, result.stderr


def test_compose_cli_refuses_to_run_without_any_secret() -> None:
    result = run_compose(COMPOSE_FILE, "config", "-q", secrets={})
    assert result.returncode != 0
    assert "set " in result.stderr


def test_no_secret_has_a_default() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for name in SECRETS:
        assert f"${{{name}:-" not in text and f"${{{name}-" not in text, name
        assert f"${{{name}}}" not in text, f"{name} without :? would become empty"
    for old in OLD_DEFAULTS:
        assert old not in text, old
    for path in (ROOT / "deploy").rglob("*"):
        if path.is_file() and path.suffix in (".yml", ".yaml", ".conf", ".sh", ".sql"):
            for old in OLD_DEFAULTS:
                assert old not in path.read_text(encoding="utf-8"), f"{path}: {old}"


def test_no_admin_port_is_published_on_every_interface() -> None:
    for name, svc in resolved().items():
        for host, port in host_bindings(svc):
            if port not in DEVICE_PORTS:
                assert host == "127.0.0.1", f"{name} publishes {port} on {host}"
    published = {port for svc in resolved().values() for _, port in host_bindings(svc)}
    assert published == {"1883", "8883", "5555", "9808", "9090", "3000"}


@pytest.mark.parametrize(("service_name", "variable", "port"), [
    ("flower", "FLOWER_BIND", "5555"), ("grafana", "GRAFANA_BIND", "3000"),
    ("prometheus", "PROMETHEUS_BIND", "9090"), ("celery-exporter", "EXPORTER_BIND", "9808"),
])
def test_an_operator_opts_in_to_publish_an_admin_port(service_name: str, variable: str, port: str) -> None:
    result = run_compose(COMPOSE_FILE, "config", extra_env={variable: "0.0.0.0"})
    assert result.returncode == 0, result.stderr
    svc = yaml.safe_load(result.stdout)["services"][service_name]
    assert ("0.0.0.0", port) in host_bindings(svc)


def test_compose_cli_rejects_a_broken_file(tmp_path: Path) -> None:
    # Guards against a validator that accepts anything.
    broken = COMPOSE_FILE.read_text(encoding="utf-8").replace(
        "condition: service_completed_successfully", "condition: service_finished", 1)
    (tmp_path / "docker-compose.yml").write_text(broken, encoding="utf-8")
    result = run_compose(tmp_path / "docker-compose.yml", "config", "-q")
    assert result.returncode != 0


def test_interpolated_env_reaches_every_app_service() -> None:
    for name in IMAGE_SERVICES:
        env = as_mapping(resolved()[name]["environment"])
        for key, value in SHARED_ENV.items():
            assert env.get(key) == value, f"{name}: {key}"
        assert env.get("CELERY_BROKER_URL") == (BROKER_URL if name in CELERY_SERVICES else None), name


def test_the_redis_password_goes_only_where_redis_is_used() -> None:
    holders = {name for name, svc in resolved().items() if SECRETS["REDIS_PASSWORD"] in str(svc)}
    assert holders == {*CELERY_SERVICES, "redis", "celery-exporter"}


@pytest.mark.parametrize("name", IMAGE_SERVICES)
def test_each_process_logs_in_to_postgres_as_its_own_role(name: str) -> None:
    env = as_mapping(resolved()[name]["environment"])
    assert env.get("DATABASE_URL") == DATABASE_LOGINS.get(name)
    assert SECRETS["POSTGRES_PASSWORD"] not in str(resolved()[name])


def test_only_the_database_gets_the_superuser_password_and_the_role_passwords() -> None:
    env = as_mapping(resolved()["db"]["environment"])
    assert env["POSTGRES_PASSWORD"] == SECRETS["POSTGRES_PASSWORD"]
    assert env["POSTGRES_DB"] == "traksense"
    for role in ("OWNER", "WORKER", "DLQ"):
        name = f"TRAKSENSE_{role}_PASSWORD"
        assert env[name] == SECRETS[name]
    others = [n for n in resolved() if n != "db" and SECRETS["POSTGRES_PASSWORD"] in str(resolved()[n])]
    assert others == []


def test_the_database_makes_the_login_roles_at_its_first_start() -> None:
    binds = mounts(service("db"))
    assert binds["/docker-entrypoint-initdb.d/100_traksense_roles.sh"] == "./deploy/postgres/init-roles.sh"
    assert os.access(ROOT / "deploy" / "postgres" / "init-roles.sh", os.X_OK)


def test_only_the_processes_using_postgres_reach_it() -> None:
    on_db = {name for name, svc in resolved().items() if "db" in svc.get("networks", {})}
    assert on_db == {"db", "migrate", "worker", "dlq"}
    assert set(resolved()["grafana"]["networks"]) == {"monitoring"}
    assert "monitoring" in resolved()["prometheus"]["networks"]


def test_the_dlq_tooling_runs_on_demand() -> None:
    dlq = service("dlq")
    assert dlq["profiles"] == ["tools"]
    assert dlq["entrypoint"] == ["python", "-m", "ingest_tasks.dlq"]
    assert dlq.get("restart") == "no"


# --- durability: Redis and Mosquitto ----------------------------------------------------------


def test_redis_has_append_only_file_on_a_volume() -> None:
    redis = service("redis")
    assert str(redis["image"]).startswith("redis:7")
    args = command_of(redis)
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] in ("everysec", "always")
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(str(v).endswith(":/data") for v in redis["volumes"])
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])


def test_redis_requires_a_password_and_its_health_check_gives_it() -> None:
    redis = resolved()["redis"]
    args = command_of(redis)
    assert args[args.index("--requirepass") + 1] == SECRETS["REDIS_PASSWORD"]
    assert as_mapping(redis["environment"])["REDISCLI_AUTH"] == SECRETS["REDIS_PASSWORD"]
    assert "--broker-url=" + BROKER_URL in command_of(resolved()["celery-exporter"])


def test_mosquitto_gets_our_config_and_a_data_volume() -> None:
    mqtt = service("mqtt")
    assert str(mqtt["image"]).startswith("eclipse-mosquitto:2")
    volumes = [str(v) for v in mqtt["volumes"]]
    assert "./deploy/mosquitto:/mosquitto/config:ro" in volumes
    data_volume = next(v.split(":")[0] for v in volumes if v.split(":")[1] == "/mosquitto/data")
    assert data_volume in compose()["volumes"], "mosquitto data must be a named volume"
    assert "1883:1883" in published_ports(mqtt)


def test_mosquitto_serves_tls_with_the_operators_certificate() -> None:
    mqtt = resolved()["mqtt"]
    assert ("0.0.0.0", "8883") in host_bindings(mqtt)
    binds = {str(v["target"]): str(v.get("source", "")) for v in mqtt["volumes"]} if isinstance(
        mqtt["volumes"][0], dict) else {str(v).split(":")[1]: str(v).split(":")[0] for v in mqtt["volumes"]}
    assert binds["/mosquitto/certs"] == SECRETS["MQTT_TLS_DIR"]
    assert binds["/mosquitto/conf.d/tls.conf"].endswith("deploy/mosquitto/tls.conf")
    assert mosquitto_conf()["include_dir"] == ["/mosquitto/conf.d"]  # else nothing listens on 8883


def test_mosquitto_starts_through_dynsec_init_and_the_listener_after_its_account() -> None:
    mqtt = service("mqtt")
    assert mqtt["entrypoint"][0] == "/mosquitto/config/dynsec-init.sh"
    assert "not authori" in " ".join(mqtt["healthcheck"]["test"])
    assert dict(iter_depends(service("listener"))).get("mqtt-init") == "service_completed_successfully"
    assert as_mapping(resolved()["listener"]["environment"])["MQTT_URL_FILE"] == "/run/secrets/mqtt_listener_url"


def test_mosquitto_keeps_the_queue_of_an_offline_listener() -> None:
    conf = mosquitto_conf()
    assert conf["listener"] == ["1883"]
    assert conf["persistence"] == ["true"]
    assert conf["persistence_location"] == ["/mosquitto/data/"]
    assert int(conf["autosave_interval"][0]) <= 300  # stock 1800 s loses too much on a crash
    assert int(conf["max_queued_messages"][0]) >= 100_000  # stock 1000 drops telemetry
    assert conf["max_queued_bytes"] == ["0"]
    # The listener's MQTT Maximum Packet Size: payloads between INGEST_MAX_PAYLOAD_BYTES and this
    # still reach the DLQ as payload_too_large (tests/unit/test_broker_config.py holds them equal).
    assert conf["max_packet_size"] == ["1048576"]
    assert "memory_limit" not in conf


def test_mosquitto_refuses_anonymous_clients_and_loads_the_dynamic_security_plugin() -> None:
    conf = mosquitto_conf()
    assert conf["allow_anonymous"] == ["false"]
    assert conf["plugin"] == ["/usr/lib/mosquitto_dynamic_security.so"]
    assert conf["plugin_opt_config_file"] == ["/mosquitto/data/dynamic-security.json"]
    assert "password_file" not in conf


def test_db_is_timescale_with_a_volume_and_a_health_check() -> None:
    db = service("db")
    assert db["image"] == "timescale/timescaledb:2.28.3-pg15"  # pinned to what tests/timescale runs
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in db["volumes"])
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert not published_ports(db)
    assert not published_ports(service("redis"))


# --- the app services -------------------------------------------------------------------------


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_has_the_shared_env(name: str) -> None:
    env = as_mapping(service(name)["environment"])
    assert env["LOG_FORMAT"] == "json"
    assert name not in CELERY_SERVICES or "${REDIS_PASSWORD:?" in env["CELERY_BROKER_URL"]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_runs_the_contract_command(name: str) -> None:
    expected = CONTRACT_COMMANDS[name]
    assert command_of(service(name))[: len(expected)] == expected


@pytest.mark.parametrize("name", IMAGE_SERVICES)
def test_app_services_share_one_image_built_here(name: str) -> None:
    svc = service(name)
    assert svc["build"] in (".", {"context": "."})
    assert svc["image"] == service("listener")["image"]


def test_migrate_is_one_shot_after_the_database() -> None:
    migrate = service("migrate")
    assert migrate.get("restart", "no") == "no"
    assert dict(iter_depends(migrate)) == {"db": "service_healthy"}


@pytest.mark.parametrize("name", [n for n in APP_SERVICES if n != "migrate"])
def test_app_service_waits_for_migrations(name: str) -> None:
    deps = dict(iter_depends(service(name)))
    assert deps.get("migrate") == "service_completed_successfully"
    assert deps.get("redis") == "service_healthy"


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_service_restarts(name: str) -> None:
    assert service(name).get("restart") in ("unless-stopped", "always")


def test_worker_scales() -> None:
    worker = service("worker")
    assert "container_name" not in worker
    assert "hostname" not in worker
    assert not published_ports(worker)


def test_worker_health_check_pings_its_own_node() -> None:
    test = service("worker")["healthcheck"]["test"]
    # CMD-SHELL so that the shell expands HOSTNAME; $$ so that Compose leaves `$` to the shell.
    assert test[0] == "CMD-SHELL"
    assert "celery -A ingest_tasks inspect ping -d celery@$$HOSTNAME" in test[1]


def test_listener_health_check_uses_the_health_module() -> None:
    assert service("listener")["healthcheck"]["test"] == ["CMD", "python", "-m", "listener.health"]
    assert dict(iter_depends(service("listener"))).get("mqtt") == "service_healthy"


def test_metrics_ports_stay_internal() -> None:
    assert "9100" in [str(p) for p in service("listener")["expose"]]
    assert "9101" in [str(p) for p in service("worker")["expose"]]
    for name, svc in compose()["services"].items():
        for port in published_ports(svc):
            assert "9100" not in port and "9101" not in port, f"{name} publishes {port}"


def test_flower_requires_the_operators_basic_auth() -> None:
    flower = resolved()["flower"]
    assert as_mapping(flower["environment"])["FLOWER_BASIC_AUTH"] == SECRETS["FLOWER_BASIC_AUTH"]
    assert host_bindings(flower) == [("127.0.0.1", "5555")]
    assert "5555/healthcheck" in " ".join(flower["healthcheck"]["test"])


def test_celery_exporter_reads_the_broker_on_9808() -> None:
    exporter = service("celery-exporter")
    assert str(exporter["image"]).split(":")[0] == "danihodovic/celery-exporter"
    assert any(arg.startswith("--broker-url=redis://:${REDIS_PASSWORD:?") for arg in command_of(exporter))
    assert host_bindings(resolved()["celery-exporter"]) == [("127.0.0.1", "9808")]


def mounts(svc: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts (`./host:/container[:ro]`)."""
    binds = (str(v).split(":") for v in svc.get("volumes", []))
    return {parts[1]: parts[0] for parts in binds if parts[0].startswith("./")}


def test_prometheus_scrapes_compose_services_from_the_repo_config() -> None:
    prometheus = service("prometheus")
    config_dir = mounts(prometheus)["/etc/prometheus"]
    config = yaml.safe_load((ROOT / config_dir / "prometheus.yml").read_text(encoding="utf-8"))
    hosts = {target.split(":")[0] for job in config["scrape_configs"]
             for static in job.get("static_configs", []) for target in static["targets"]}
    hosts |= {name for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", [])
              for name in sd["names"]}
    assert hosts == {"listener", "worker", "flower", "celery-exporter"}
    assert hosts <= compose()["services"].keys()
    assert host_bindings(resolved()["prometheus"]) == [("127.0.0.1", "9090")]


def test_grafana_gets_the_provisioning_and_the_dashboard() -> None:
    grafana = service("grafana")
    binds = mounts(grafana)
    assert binds["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    home = as_mapping(grafana["environment"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    directory, _, file = home.rpartition("/")
    assert (ROOT / binds[directory] / file).is_file()
    assert dict(iter_depends(grafana)) == {"prometheus": "service_healthy"}
    env = as_mapping(resolved()["grafana"]["environment"])
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == SECRETS["GRAFANA_ADMIN_PASSWORD"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert host_bindings(resolved()["grafana"]) == [("127.0.0.1", "3000")]


# --- the image --------------------------------------------------------------------------------


def test_dockerfile_builds_a_small_non_root_image() -> None:
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()]
    assert "FROM python:3.11-slim" in lines
    for package in ("ingest_tasks", "listener", "migrations"):
        assert f"COPY {package}/ {package}/" in lines
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert lines[-1] == 'CMD ["python", "-m", "listener"]'
    ignore = dockerignore()
    assert ignore[0] == "*", ".dockerignore should exclude everything not listed"
    assert "!.env" not in ignore


def dockerignore() -> list[str]:
    return [ln.strip() for ln in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
            if ln.strip() and not ln.startswith("#")]


def test_dockerfile_installs_the_runtime_lock_alone_with_hashes() -> None:
    # The image gets requirements.lock and nothing else: no dev tools that could hide a missing
    # runtime dependency. tests/integration/test_runtime_install.py runs the same pip line.
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()]
    assert "COPY requirements.lock ." in lines
    assert [ln for ln in lines if "pip install" in ln] == ["RUN pip install --require-hashes -r requirements.lock"]
    assert [entry for entry in dockerignore() if "requirements" in entry] == ["!requirements.lock"]


def make_secrets(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "scripts" / "make-secrets.sh"), str(directory), "mqtt.example.com"],
                          capture_output=True, text=True, timeout=60, check=False)


def test_make_secrets_writes_every_secret_compose_needs_once(tmp_path: Path) -> None:
    assert make_secrets(tmp_path).returncode == 0
    values = dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines())
    assert set(values) == set(SECRETS)
    passwords = [v.removeprefix("ops:") for k, v in values.items() if not k.endswith(("_FILE", "_DIR"))]
    assert all(len(p) == 48 and set(p) <= set("0123456789abcdef") for p in passwords)  # URL-safe
    assert len(set(passwords)) == len(passwords)
    files = {k: str((tmp_path / v).resolve()) for k, v in values.items() if k.endswith(("_FILE", "_DIR"))}
    assert (tmp_path / ".env").stat().st_mode & 0o077 == 0
    assert (Path(files["MQTT_TLS_DIR"]) / "server.crt").exists()
    admin = Path(files["MQTT_ADMIN_PASSWORD_FILE"]).read_text().strip()
    assert Path(files["MQTT_ADMIN_URL_FILE"]).read_text().strip() == f"mqtt://admin:{admin}@mqtt:1883"
    result = run_compose(COMPOSE_FILE, "config", secrets={**values, **files})
    assert result.returncode == 0, result.stderr

    again = make_secrets(tmp_path)
    assert again.returncode == 1 and "exists" in again.stderr  # never overwrites an operator's secrets

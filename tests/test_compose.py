"""docker-compose.yml runs the cluster that docs/operations.md describes. No container engine runs in CI, so the
file is checked against the Compose Specification's JSON schema (tests/data/compose-spec.json) and against what the
cluster relies on: secrets are required variables, Dask processes hold none, only the proxy publishes a port, the
proxy's Caddyfile names every API server, and the docs name every service. Each check is shown to fail on a broken
copy. tests/test_compose_live.py runs the parts that can run outside containers."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
CADDYFILE = ROOT / "deploy" / "Caddyfile"
OPERATIONS = ROOT / "docs" / "operations.md"
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"

#: Variables that hold secrets: every use must be `${VAR:?message}`, and no Dask process may see them.
SECRETS = ("POSTGRES_PASSWORD", "PYQD_SIGNING_KEY", "PYQD_ADMIN_PASSWORD")
#: Environment names that say they hold a secret: their values must come from required variables, never literals.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|SIGNING_KEY")
#: Settings only API servers may have.
SERVER_ONLY = ("PYQD_DATABASE_URL", "PYQD_SIGNING_KEY", "PYQD_ADMIN_PASSWORD")
#: A `$` as Compose reads it: `$$` (a literal $), `${NAME<op>text}` or `$NAME`; anything else is an error to Compose.
DOLLAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_]\w*))")
BRACED = re.compile(r"(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<text>.*))?", re.S)


def load_compose() -> dict[str, Any]:
    """The file as Compose sees it: YAML merge keys applied, and no part shared between services (as YAML anchors
    share them), so a test can change one service alone."""
    return json.loads(json.dumps(yaml.safe_load(COMPOSE.read_text())))


def strings(node: object, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string (keys' values, list items) in a parsed YAML document, with where it is."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from strings(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from strings(v, f"{path}[{i}]")


def interpolate(text: str, env: dict[str, str]) -> str:
    """`text` with its variables replaced as Compose does (`:-` defaults, `:?` required, `:+` alternatives)."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group("named"):
            return env.get(m.group("named"), "")
        b = BRACED.fullmatch(m.group("braced"))
        if b is None:
            raise ValueError(f"invalid interpolation {m.group(0)!r}")
        name, op, alt = b.group("name"), b.group("op"), b.group("text") or ""
        value = env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":?", "?") and unset:
            raise ValueError(f"required variable {name} is missing a value: {alt}")
        if op in (":-", "-") and unset:
            return alt
        if op in (":+", "+"):
            return "" if unset else alt
        return value or ""

    return DOLLAR.sub(one, text)


def services_running(compose: dict[str, Any], program: str) -> list[str]:
    """The services whose command starts with `program` (the pyqd image's default command is `pyqd serve`)."""
    out = []
    for name, svc in compose["services"].items():
        command = svc.get("command", ["pyqd", "serve"] if "build" in svc else [])
        argv = command.split() if isinstance(command, str) else command
        if argv and argv[0] == program:
            out.append(name)
    return out


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def edge_alias(svc: dict[str, Any]) -> str | None:
    networks = svc.get("networks", {})
    aliases = (networks.get("edge") or {}).get("aliases", []) if isinstance(networks, dict) else []
    return aliases[0] if aliases else None


def network_names(svc: dict[str, Any]) -> list[str]:
    networks = svc.get("networks", ["default"])
    return list(networks)


def caddy_upstreams(caddyfile: str) -> list[str]:
    m = re.search(r"^\s*reverse_proxy\s+([^{\n]*)\{", caddyfile, re.M)
    return m.group(1).split() if m else []


def caddy_listen_port(caddyfile: str) -> str | None:
    m = re.search(r"^:(\d+)\s*\{", caddyfile, re.M)
    return m.group(1) if m else None


def documented_services(doc: str) -> set[str]:
    """The services docs/operations.md promises: the backquoted names in the first column of the first table under
    its "The services" heading."""
    section = doc.split("\n## The services\n", 1)[1]
    table = re.search(r"^\|.*?(?=^[^|])", section, re.M | re.S)
    assert table, "docs/operations.md has no table under 'The services'"
    names: set[str] = set()
    for line in table.group(0).splitlines():
        names.update(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return names


# -- the checks: each returns what is wrong (nothing when all is well) ------------------------------------------


def schema_problems(compose: dict[str, Any], *_: object) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = validator_cls(schema).iter_errors(compose)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def reference_problems(compose: dict[str, Any], *_: object) -> list[str]:
    """What Compose checks beyond the schema: every service, network and named volume used is defined."""
    services, networks = compose["services"], set(compose.get("networks", {})) | {"default"}
    volumes = set(compose.get("volumes", {}))
    out = []
    for name, svc in services.items():
        out += [f"{name} depends on unknown service {d}" for d in svc.get("depends_on", {}) if d not in services]
        out += [f"{name} joins unknown network {n}" for n in network_names(svc) if n not in networks]
        for mount in svc.get("volumes", []):
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount.get("source", "")
            if source and not source.startswith((".", "/", "~")) and source not in volumes:
                out.append(f"{name} mounts unknown volume {source}")
    return out


def interpolation_problems(compose: dict[str, Any], *_: object) -> list[str]:
    """Every `$` is one Compose reads; every use of a secret is required; secret-named settings are not literals."""
    out = []
    for path, text in strings(compose):
        stray = DOLLAR.sub("", text)
        if "$" in stray:
            out.append(f"{path}: a `$` that Compose cannot read in {text!r} (write $$ for a literal $)")
        for m in DOLLAR.finditer(text):
            b = BRACED.fullmatch(m.group("braced") or "")
            name = m.group("named") or (b.group("name") if b else "")
            if name in SECRETS and (b is None or b.group("op") != ":?" or not b.group("text")):
                out.append(f"{path}: {name} must be required with a message, as ${{{name}:?message}}")
    for name, svc in compose["services"].items():
        for key, value in environment(svc).items():
            if SECRET_NAME.search(key) and not re.fullmatch(r"(?:[^$]*\$\{\w+:\?[^}]+\}[^$]*)+", value):
                out.append(f"{name}: {key} must come from a required variable, not {value!r}")
    return out


def dask_problems(compose: dict[str, Any], *_: object) -> list[str]:
    """Dask schedulers and workers hold no database URL, no signing key, no password, no data of the servers."""
    out = []
    server_volumes = {
        m.split(":", 1)[0]
        for api in services_running(compose, "pyqd")
        for m in compose["services"][api].get("volumes", [])
        if isinstance(m, str)
    }
    dask = services_running(compose, "dask")
    if not dask:
        out.append("no Dask service")
    for name in dask:
        svc = compose["services"][name]
        out += [f"{name} has {key}" for key in environment(svc) if key in SERVER_ONLY or SECRET_NAME.search(key)]
        out += [f"{name} sees {path} {text!r}" for path, text in strings(svc) if any(s in text for s in SECRETS)]
        out += [f"{name} reads an env_file" for _ in [svc] if "env_file" in svc]
        mounts = {m.split(":", 1)[0] for m in svc.get("volumes", []) if isinstance(m, str)}
        out += [f"{name} mounts the API servers' {v}" for v in mounts & server_volumes]
    return out


def exposure_problems(compose: dict[str, Any], *_: object) -> list[str]:
    """Only the proxy publishes a port; no fixed container names (so `--scale` works)."""
    services = compose["services"]
    out = [f"{name} publishes ports" for name, svc in services.items() if svc.get("ports") and name != "proxy"]
    out += [f"{name} has a fixed container_name" for name, svc in services.items() if "container_name" in svc]
    if not services.get("proxy", {}).get("ports"):
        out.append("the proxy publishes no port")
    return out


def wiring_problems(compose: dict[str, Any], caddyfile: str, *_: object) -> list[str]:
    """The proxy, the API servers and Dask find each other, and X-Forwarded-* is believed from the proxy only."""
    services, out = compose["services"], []
    apis = services_running(compose, "pyqd")
    if len(apis) < 2:
        out.append(f"fewer than two API servers: {apis}")
    port = caddy_listen_port(caddyfile)
    expected = sorted(f"{edge_alias(services[a])}:{environment(services[a]).get('PYQD_PORT', '8000')}" for a in apis)
    if sorted(caddy_upstreams(caddyfile)) != expected:
        out.append(f"the Caddyfile's upstreams {caddy_upstreams(caddyfile)} are not the API servers {expected}")
    for directive in ("lb_policy round_robin", "health_uri /ready?cluster=false"):
        if not re.search(rf"^\s*{re.escape(directive)}\s*$", caddyfile, re.M):
            out.append(f"the Caddyfile lacks `{directive}`")
    edge = [n for n, s in services.items() if "edge" in network_names(s)]
    if sorted(edge) != sorted([*apis, "proxy"]):
        out.append(f"the edge network holds {sorted(edge)}, not only the proxy and the API servers")
    subnet = compose.get("networks", {}).get("edge", {}).get("ipam", {}).get("config", [{}])[0].get("subnet")
    schedulers = [a for a in services_running(compose, "dask") if services[a]["command"][1] == "scheduler"]
    for api in apis:
        env = environment(services[api])
        if (trusted := env.get("PYQD_FORWARDED_ALLOW_IPS")) != subnet:
            out.append(f"{api} trusts X-Forwarded-* from {trusted!r}, not the edge network's {subnet}")
        if env.get("PYQD_API_URL") != f"http://proxy:{port}":
            out.append(f"{api}: PYQD_API_URL {env.get('PYQD_API_URL')!r} is not the proxy's http://proxy:{port}")
        if env.get("PYQD_ENGINE") != "dask" or not schedulers:
            out.append(f"{api} does not run on Dask")
        elif env.get("PYQD_DASK_SCHEDULER") != f"tcp://{schedulers[0]}:8786":
            out.append(f"{api}: PYQD_DASK_SCHEDULER {env.get('PYQD_DASK_SCHEDULER')!r} is not {schedulers[0]}")
    for name in services_running(compose, "dask"):
        command = services[name]["command"]
        if command[1] == "worker" and (not schedulers or f"tcp://{schedulers[0]}:8786" not in command):
            out.append(f"{name} does not join the scheduler")
    for name in schedulers:  # the Dask engine retries a task of a dead worker once, no more
        if environment(services[name]).get("DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES") != "1":
            out.append(f"{name} does not set distributed.scheduler.allowed-failures to 1")
    return out


def health_problems(compose: dict[str, Any], *_: object) -> list[str]:
    out = []
    for name, svc in compose["services"].items():
        if "healthcheck" not in svc:
            out.append(f"{name} has no healthcheck")
        if svc.get("restart") != "unless-stopped":
            out.append(f"{name} is not restarted")
        for dep, cond in svc.get("depends_on", {}).items():
            want = "service_started" if name == "proxy" else "service_healthy"
            if cond.get("condition") != want:
                out.append(f"{name} waits for {dep} to be {cond.get('condition')}, not {want}")
    return out


def doc_problems(compose: dict[str, Any], _caddyfile: str, doc: str) -> list[str]:
    promised, defined = documented_services(doc), set(compose["services"])
    out = [f"docs/operations.md promises {s}, which the file lacks" for s in sorted(promised - defined)]
    out += [f"docs/operations.md does not describe {s}" for s in sorted(defined - promised)]
    return out


CHECKS: list[Callable[..., list[str]]] = [
    schema_problems,
    reference_problems,
    interpolation_problems,
    dask_problems,
    exposure_problems,
    wiring_problems,
    health_problems,
    doc_problems,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_the_compose_file_passes(check: Callable[..., list[str]]) -> None:
    assert check(load_compose(), CADDYFILE.read_text(), OPERATIONS.read_text()) == []


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(compose: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = compose
        for p in parents:
            node = node[p]
        node[last] = value

    return change


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def change(compose: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = compose
        for p in parents:
            node = node[p]
        del node[last]

    return change


BROKEN = [
    ("a misspelt key", _set("services/api-1/enviroment", {}), schema_problems, "enviroment"),
    ("a port as a list of lists", _set("services/proxy/ports", [["8000"]]), schema_problems, "proxy/ports"),
    (
        "an unknown dependency",
        _set("services/api-1/depends_on/pg", {"condition": "service_started"}),
        reference_problems,
        "pg",
    ),
    ("an undefined network", _set("services/dask-worker/networks", ["cluster", "db"]), reference_problems, "db"),
    (
        "a defaulted signing key",
        _set("services/api-2/environment/PYQD_SIGNING_KEY", "${PYQD_SIGNING_KEY:-changeme}"),
        interpolation_problems,
        "PYQD_SIGNING_KEY must be required",
    ),
    (
        "a literal password",
        _set("services/postgres/environment/POSTGRES_PASSWORD", "postgres"),
        interpolation_problems,
        "POSTGRES_PASSWORD must come from a required variable",
    ),
    ("a stray $", _set("services/api-1/environment/PYQD_PUBLIC_URL", "$(hostname)"), interpolation_problems, "$$"),
    (
        "a worker with the database URL",
        _set("services/dask-worker/environment", {"PYQD_DATABASE_URL": "${PYQD_DB_URL:?set it}"}),
        dask_problems,
        "dask-worker has PYQD_DATABASE_URL",
    ),
    (
        "a worker with the signing key under another name",
        _set("services/dask-worker/environment", {"KEY": "${PYQD_SIGNING_KEY:?set it}"}),
        dask_problems,
        "dask-worker sees",
    ),
    (
        "a worker on the edge network",
        _set("services/dask-worker/networks", ["cluster", "data", "edge"]),
        wiring_problems,
        "the edge network holds",
    ),
    (
        "a worker with the data volume",
        _set("services/dask-worker/volumes", ["api-1-data:/var/lib/pyqd"]),
        dask_problems,
        "api-1-data",
    ),
    ("a published API server", _set("services/api-2/ports", ["8001:8000"]), exposure_problems, "api-2 publishes"),
    ("a named worker", _set("services/dask-worker/container_name", "worker"), exposure_problems, "container_name"),
    (
        "a third API server",
        _set("services/api-3", {"build": ".", "networks": {"edge": {}}}),
        wiring_problems,
        "upstreams",
    ),
    (
        "a server trusting everyone",
        _set("services/api-1/environment/PYQD_FORWARDED_ALLOW_IPS", "*"),
        wiring_problems,
        "api-1 trusts",
    ),
    ("a local engine", _delete("services/api-2/environment/PYQD_ENGINE"), wiring_problems, "api-2 does not run on"),
    ("no healthcheck", _delete("services/dask-scheduler/healthcheck"), health_problems, "dask-scheduler has no"),
    (
        "Dask's own retries",
        _delete("services/dask-scheduler/environment/DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"),
        wiring_problems,
        "allowed-failures",
    ),
    ("an undocumented service", _set("services/redis", {"image": "redis:7"}), doc_problems, "does not describe redis"),
]


@pytest.mark.parametrize(("change", "check", "expected"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_a_broken_copy_fails(change: Callable[[dict[str, Any]], None], check: Callable[..., list[str]], expected: str):
    compose = copy.deepcopy(load_compose())
    change(compose)
    problems = check(compose, CADDYFILE.read_text(), OPERATIONS.read_text())
    assert any(expected in p for p in problems), problems


def test_the_caddyfile_and_the_docs_are_read_as_the_checks_think():
    caddyfile = CADDYFILE.read_text()
    assert caddy_upstreams(caddyfile) == ["api-1.edge:8000", "api-2.edge:8000"]
    assert caddy_listen_port(caddyfile) == "8000"
    without_api_2 = caddyfile.replace(" api-2.edge:8000", "")
    assert any("upstreams" in p for p in wiring_problems(load_compose(), without_api_2))
    doc = OPERATIONS.read_text()
    assert {"postgres", "api-1", "api-2", "proxy", "dask-scheduler", "dask-worker"} <= documented_services(doc)
    more = doc.replace("`api-2`", "`api-2`, `api-3`")
    assert any("promises api-3" in p for p in doc_problems(load_compose(), "", more))


def test_the_secrets_are_required_when_the_file_is_read():
    texts = [text for _, text in strings(load_compose())]
    env = {name: "x" * 40 for name in SECRETS}
    [interpolate(text, env) for text in texts]  # all set: every string reads
    for name in SECRETS:
        with pytest.raises(ValueError, match=f"required variable {name} is missing"):
            [interpolate(text, {k: v for k, v in env.items() if k != name}) for text in texts]
        with pytest.raises(ValueError, match=name):
            [interpolate(text, {**env, name: ""}) for text in texts]
    url = environment(load_compose()["services"]["api-1"])["PYQD_DATABASE_URL"]
    assert interpolate(url, {**env, "POSTGRES_PASSWORD": "abc"}) == "postgresql+psycopg://pyqd:abc@postgres:5432/pyqd"

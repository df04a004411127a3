"""The Docker packaging, tested without a Docker engine (none runs on this machine or in CI).

First the Dockerfile, .dockerignore and docker/compose*.yaml are parsed and checked against what
the image promises: a slim Python base, a wheel built from the source tree, a non-root user, port
8000 on 0.0.0.0, a volume for the database file, settings as environment variables, a
standard-library HEALTHCHECK on /_emulator/ready, and a compose file whose app waits for it.

Then the image is rehearsed outside Docker (`slow`): the wheel is built from the build context that
.dockerignore leaves, by the build stage's own RUN command; it is installed into a fresh virtual
environment; and the image's CMD and HEALTHCHECK run exactly as written, with the image's ENV.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from emulator.server import ServerThread
from emulator.settings import (
    ENV_PREFIX,
    OPTIONS,
    build_settings,
    environment_values,
    settings_from_environment,
)
from tests.conftest import StartEmulator, contract_environment

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker" / "compose.yaml"
COMPOSE_PERSISTENT = ROOT / "docker" / "compose.persistent.yaml"
READY_PATH = "/_emulator/ready"
SETTING_ENVS = {option.env for option in OPTIONS}


# --- A small Dockerfile parser ---------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    arguments: str  # everything after the keyword, continuation lines joined
    line: int  # where the instruction starts, 1-based


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: tuple[Instruction, ...]  # after FROM

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"the stage FROM {self.base} has no {keyword}"
        return found[-1]

    def index(self, instruction: Instruction) -> int:
        return self.instructions.index(instruction)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with `\\` continuations joined; comment and blank lines skipped (also inside
    a continuation, as Docker does). Parser directives are comments here: the escape is `\\`."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(raw.rstrip()[:-1] if continued else raw)
        if continued:
            continue
        keyword, _, arguments = "".join(pending).strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = []
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


def stages_of(instructions: list[Instruction]) -> list[Stage]:
    stages: list[Stage] = []
    for position, instruction in enumerate(instructions):
        if instruction.keyword != "FROM":
            continue
        _, words = split_flags(instruction.arguments)
        parts = words.split()
        name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
        assert len(parts) in (1, 3), f"line {instruction.line}: FROM image [AS name]"
        following = []
        for later in instructions[position + 1 :]:
            if later.keyword == "FROM":
                break
            following.append(later)
        stages.append(Stage(parts[0], name, tuple(following)))
    return stages


def split_flags(arguments: str) -> tuple[dict[str, str], str]:
    """Leading `--name=value` flags (as in FROM, COPY, HEALTHCHECK) and the rest."""
    flags: dict[str, str] = {}
    rest = arguments.strip()
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        name, _, value = word[2:].partition("=")
        flags[name] = value
        rest = rest.strip()
    return flags, rest


def exec_form(text: str) -> list[str]:
    """A JSON array of strings. Docker runs anything else (an invalid array too!) under a shell."""
    assert text.startswith("["), f"not the exec (JSON) form: {text}"
    argv = json.loads(text)
    assert isinstance(argv, list), text
    assert argv, text
    assert all(isinstance(word, str) for word in argv), text
    return argv


def env_pairs(arguments: str) -> dict[str, str]:
    """ENV key=value ... (quotes as a shell reads them), or the legacy `ENV key value`."""
    words = shlex.split(arguments)
    if "=" not in words[0]:
        return {words[0]: arguments.partition(" ")[2].strip()}
    pairs = dict(word.split("=", 1) for word in words)
    assert all("$" not in value for value in pairs.values()), "this parser does not substitute"
    return pairs


def volumes_of(arguments: str) -> list[str]:
    return exec_form(arguments) if arguments.startswith("[") else arguments.split()


def seconds(duration: str) -> float:
    """A Docker duration: 30s, 1m30s, 500ms."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts, duration
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


@dataclass(frozen=True)
class Healthcheck:
    flags: dict[str, str]
    argv: list[str]

    @property
    def timeout(self) -> float:
        return seconds(self.flags["timeout"])


def healthcheck_of(stage: Stage) -> Healthcheck:
    flags, rest = split_flags(stage.last("HEALTHCHECK").arguments)
    keyword, _, command = rest.partition(" ")
    assert keyword.upper() == "CMD", "HEALTHCHECK CMD [...] (not NONE)"
    return Healthcheck(flags, exec_form(command.strip()))


def image_environment(final: Stage) -> dict[str, str]:
    """The ENV of the final stage, in order (the python base image's own are not listed)."""
    environment: dict[str, str] = {}
    for instruction in final.all("ENV"):
        environment.update(env_pairs(instruction.arguments))
    return environment


# --- A model of how .dockerignore shapes the build context -----------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match (`*`, `?`, `[...]` within one path element) plus `**` (any depth)."""
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
            i = end
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out)


@dataclass(frozen=True)
class IgnoreRule:
    regex: re.Pattern[str]
    pattern: str
    include: bool  # a `!` exception


def ignore_rules(text: str) -> list[IgnoreRule]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append(IgnoreRule(_glob_regex(pattern), pattern, include))
    return rules


def is_excluded(relative: str, rules: list[IgnoreRule]) -> bool:
    """The last rule matching the path or one of its parent directories decides, as when the
    builder walks the context and skips an excluded directory unless an exception reaches in."""
    parts = PurePosixPath(relative).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for rule in rules:
        if any(rule.regex.fullmatch(candidate) for candidate in candidates):
            excluded = not rule.include
    return excluded


def build_context(root: Path, rules: list[IgnoreRule]) -> list[str]:
    """Every file `docker build root` would send, relative, in POSIX form."""
    exceptions = [rule.pattern for rule in rules if rule.include]
    files: list[str] = []
    for directory, subdirectories, names in os.walk(root):
        here = Path(directory).relative_to(root).as_posix()
        prefix = "" if here == "." else here + "/"
        # Do not walk into an excluded directory that no exception can reach into (.venv, .git).
        subdirectories[:] = [
            sub
            for sub in subdirectories
            if not is_excluded(prefix + sub, rules)
            or any(
                e.startswith((prefix + sub + "/", "*", "?", "[")) or e == prefix + sub
                for e in exceptions
            )
        ]
        files.extend(prefix + name for name in names if not is_excluded(prefix + name, rules))
    return sorted(files)


# --- Fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return stages_of(parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def build_stage(stages: list[Stage], final: Stage) -> Stage:
    sources = [
        split_flags(i.arguments)[0]["from"] for i in final.all("COPY") if "--from=" in i.arguments
    ]
    assert len(sources) == 1, "the final stage copies the wheel from one build stage"
    named = [stage for stage in stages if stage.name == sources[0]]
    assert named, f"no stage is named {sources[0]}"
    return named[0]


@pytest.fixture(scope="module")
def healthcheck(final: Stage) -> Healthcheck:
    return healthcheck_of(final)


@pytest.fixture(scope="module")
def volume(final: Stage) -> str:
    volumes = [v for i in final.all("VOLUME") for v in volumes_of(i.arguments)]
    assert len(volumes) == 1, volumes
    return volumes[0]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return document


@pytest.fixture(scope="module")
def compose_persistent() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_PERSISTENT.read_text(encoding="utf-8"))
    return document


@pytest.fixture(scope="module")
def context_files() -> list[str]:
    return build_context(ROOT, ignore_rules(DOCKERIGNORE.read_text(encoding="utf-8")))


def python_imports(code: str) -> set[str]:
    """Top-level module names the code imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.module is not None, "no relative imports"
            assert node.level == 0, "no relative imports"
            names.add(node.module.split(".")[0])
    return names


def assert_standard_library_only(code: str) -> None:
    imports = python_imports(code)
    assert imports, "the code imports nothing?"
    assert imports <= sys.stdlib_module_names, imports - sys.stdlib_module_names


# --- The Dockerfile -----------------------------------------------------------------------------


def test_the_parser_reads_continuations_comments_flags_and_exec_forms() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"
        "FROM python:3.11-slim AS build\n"
        "RUN a \\\n"
        "    # a comment inside the continuation\n"
        "    && b\n"
        'ENV A=1 B="two words" \\\n'
        "    C=3\n"
        'HEALTHCHECK --interval=1m30s --timeout=500ms CMD ["python", "-c", "print(1)"]\n'
    )
    instructions = parse_dockerfile(text)
    assert [(i.keyword, i.line) for i in instructions] == [
        ("FROM", 2),
        ("RUN", 3),
        ("ENV", 6),
        ("HEALTHCHECK", 8),
    ]
    assert instructions[1].arguments == "a     && b"
    assert env_pairs(instructions[2].arguments) == {"A": "1", "B": "two words", "C": "3"}
    (stage,) = stages_of(instructions)
    assert (stage.base, stage.name) == ("python:3.11-slim", "build")
    check = healthcheck_of(stage)
    assert check.argv == ["python", "-c", "print(1)"]
    assert (seconds(check.flags["interval"]), check.timeout) == (90.0, 0.5)
    with pytest.raises(json.JSONDecodeError):
        exec_form('["python", "-c" "print(1)",]')


def test_images_are_slim_python_of_a_pinned_minor_version(stages: list[Stage]) -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = re.fullmatch(r">=\s*3\.(\d+)", requires)
    assert minimum, requires
    bases = {stage.base for stage in stages}
    assert len(bases) == 1, f"build and run on the same Python: {bases}"
    (base,) = bases
    pinned = re.fullmatch(r"python:3\.(\d+)-slim(-[a-z]+)?", base)
    assert pinned, f"{base} is not python:3.<minor>-slim[-<debian>]"
    assert int(pinned.group(1)) >= int(minimum.group(1)), (base, requires)


def test_the_image_installs_a_wheel_built_from_the_source_tree(
    build_stage: Stage, final: Stage, context_files: list[str]
) -> None:
    assert build_stage is not final
    builds = [i for i in build_stage.all("RUN") if "pip wheel" in i.arguments]
    assert len(builds) == 1, "the build stage runs `pip wheel` once"
    assert "--no-deps" in builds[0].arguments
    for copy in build_stage.all("COPY"):
        *sources, _destination = copy.arguments.split()
        for source in sources:
            assert source in context_files or any(
                f.startswith(source.rstrip("/") + "/") for f in context_files
            ), f"COPY {source}: not in the build context that .dockerignore leaves"
    installs = [i for i in final.all("RUN") if "pip install" in i.arguments]
    assert len(installs) == 1
    assert re.search(r"pip install [^&]*\S+\.whl", installs[0].arguments), installs[0]
    assert "--no-cache-dir" in installs[0].arguments, "no pip cache left in the image"
    for copy in final.all("COPY") + final.all("ADD"):
        assert "--from=" in copy.arguments, f"the final stage copies only the wheel: {copy}"
    everything = " ".join(i.arguments for i in final.instructions)
    for tool in ("apt-get", "apk", "gcc", "build-essential", "make "):
        assert tool not in everything, f"no build tools in the final image: {tool}"


def test_the_process_runs_as_a_non_root_user_that_owns_the_volume(
    final: Stage, volume: str
) -> None:
    user = final.last("USER")
    name, _, group = user.arguments.partition(":")
    assert name not in ("root", "0")
    assert group not in ("root", "0")
    assert final.index(user) < final.index(final.last("CMD")), "USER comes before CMD"
    setup = " ".join(i.arguments for i in final.all("RUN") if final.index(i) < final.index(user))
    created = re.search(r"useradd\b[^&]*--uid (\d+)[^&]* (\w+)\s*(?:&&|$)", setup)
    assert created, "a RUN creates the user with useradd --uid"
    uid, username = created.groups()
    assert name in (uid, username), (name, uid, username)
    owned = re.search(rf"chown (?:{username}|{uid})(?::\S+)? {re.escape(volume)}\b", setup)
    assert owned, f"{volume} belongs to {username} (a new volume copies that ownership)"
    assert final.index(final.last("VOLUME")) > max(
        final.index(i) for i in final.all("RUN") if "chown" in i.arguments
    ), "VOLUME after the chown: later changes to a volume directory are discarded"


def test_the_environment_configures_the_emulator(final: Stage, volume: str) -> None:
    environment = image_environment(final)
    ours = {name for name in environment if name.startswith(ENV_PREFIX)}
    assert ours <= SETTING_ENVS, f"not emulator settings: {ours - SETTING_ENVS}"
    settings = settings_from_environment(environment)
    assert settings.host == "0.0.0.0", "reachable from outside the container"
    exposed = {port.split("/")[0] for i in final.all("EXPOSE") for port in i.arguments.split()}
    assert exposed == {"8000"}
    assert settings.port == 8000
    database = make_url(settings.database_url)
    assert database.get_backend_name() == "sqlite"
    assert database.database is not None
    assert PurePosixPath(database.database).parent == PurePosixPath(volume), (
        "the database file lives on the volume"
    )
    assert volume == "/data"


def test_the_healthcheck_asks_ready_with_the_standard_library_only(
    healthcheck: Healthcheck, final: Stage
) -> None:
    assert healthcheck.argv[:2] == ["python", "-c"]
    assert len(healthcheck.argv) == 3
    code = healthcheck.argv[2]
    assert_standard_library_only(code)
    assert READY_PATH in code
    assert "http://127.0.0.1:" in code
    assert "os.environ.get('AMPLITUDE_EMULATOR_PORT')" in code, "the port comes from the env"
    assert "AMPLITUDE_EMULATOR_ADMIN_TOKEN" in code, "the control API needs it when set"
    assert "$" not in code, "compose would interpolate it"
    assert set(healthcheck.flags) == {"interval", "timeout", "start-period", "retries"}
    urlopen_timeouts = [
        float(keyword.value.value)
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Call)
        for keyword in node.keywords
        if keyword.arg == "timeout"
        and isinstance(keyword.value, ast.Constant)
        and isinstance(keyword.value.value, int | float)
    ]
    assert urlopen_timeouts, "urlopen has a timeout"
    assert max(urlopen_timeouts) < healthcheck.timeout, "it gives up before Docker kills it"
    assert final.index(final.last("HEALTHCHECK")) > final.index(final.last("USER"))


def test_cmd_serves_with_the_console_script(final: Stage) -> None:
    assert not final.all("ENTRYPOINT"), "the CMD is the whole command"
    command = exec_form(final.last("CMD").arguments)
    assert command == ["amplitude-emulator", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[command[0]] == "emulator.cli:main"


def test_the_ignore_model_follows_docker_rules() -> None:
    rules = ignore_rules("*\n!keep\n!src/\n**/__pycache__\n**/*.pyc\n# a comment\n")
    assert is_excluded(".venv/bin/python", rules)
    assert is_excluded("tests/test_x.py", rules)
    assert not is_excluded("keep", rules)
    assert not is_excluded("src/a/b.py", rules)
    assert is_excluded("src/a/__pycache__/b.cpython-311.pyc", rules)
    assert is_excluded("src/b.pyc", rules)
    assert not is_excluded("src/b.py", ignore_rules("src/*.pyc\n"))
    assert is_excluded("src/a.pyc", ignore_rules("src/*.py[cod]\n"))


def test_the_build_context_is_what_the_wheel_needs(context_files: list[str]) -> None:
    assert {"pyproject.toml", "README.md", "emulator/__init__.py", "emulator/cli.py"} <= set(
        context_files
    )
    for left_out in (".venv/", ".git/", "tests/", "docker/", ".mypy_cache/", "__pycache__/"):
        assert not any(f.startswith(left_out) or f"/{left_out}" in f for f in context_files)
    assert not any(f.endswith((".pyc", ".db")) for f in context_files)
    assert "openapi/openapi.yaml" in context_files, "the wheel carries the OpenAPI document"
    assert all(
        f in ("pyproject.toml", "README.md", "openapi/openapi.yaml") or f.startswith("emulator/")
        for f in context_files
    )


# --- docker/compose.yaml ------------------------------------------------------------------------


def strings_in(document: Any) -> Iterator[str]:
    if isinstance(document, str):
        yield document
    elif isinstance(document, dict):
        for key, value in document.items():
            yield from strings_in(key)
            yield from strings_in(value)
    elif isinstance(document, list):
        for value in document:
            yield from strings_in(value)


def compose_environment(service: Mapping[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "environment as a mapping"
    return {str(key): str(value) for key, value in environment.items()}


def test_compose_builds_the_image_and_publishes_its_port(
    compose: dict[str, Any], final: Stage
) -> None:
    assert "version" not in compose, "the top-level version key is obsolete"
    amplitude = compose["services"]["amplitude"]
    build = amplitude["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    assert amplitude["image"] == "amplitude-usermap-emulator:latest"
    exposed = {port.split("/")[0] for i in final.all("EXPOSE") for port in i.arguments.split()}
    assert amplitude["ports"] == [f"{port}:{port}" for port in sorted(exposed)]
    for text in strings_in(compose):
        assert "$" not in text, f"compose interpolates $: {text!r}"


def test_compose_configures_the_emulator_by_environment(compose: dict[str, Any]) -> None:
    environment = compose_environment(compose["services"]["amplitude"])
    assert set(environment) <= SETTING_ENVS, set(environment) - SETTING_ENVS
    assert "AMPLITUDE_EMULATOR_HOST" not in environment, "the image listens on 0.0.0.0"
    assert "AMPLITUDE_EMULATOR_PORT" not in environment, "the image's 8000, as published"
    settings = settings_from_environment(environment)
    assert settings.orgs is not None


def test_compose_healthcheck_is_the_images(
    compose: dict[str, Any], healthcheck: Healthcheck
) -> None:
    check = compose["services"]["amplitude"]["healthcheck"]
    assert check["test"] == ["CMD", *healthcheck.argv]
    for flag, value in healthcheck.flags.items():
        key = flag.replace("-", "_")
        assert str(check[key]) == value, key


def test_the_app_waits_for_a_healthy_emulator(compose: dict[str, Any]) -> None:
    app = compose["services"]["app"]
    assert app["depends_on"] == {"amplitude": {"condition": "service_healthy"}}
    environment = compose_environment(app)
    url = urllib.parse.urlsplit(environment["AMPLITUDE_URL"])
    assert (url.hostname, url.port) == ("amplitude", 8000), "the service name, the image's port"
    amplitude = compose_environment(compose["services"]["amplitude"])
    assert environment["AMPLITUDE_API_KEY"] == amplitude["AMPLITUDE_EMULATOR_API_KEY"]
    assert environment["AMPLITUDE_SECRET_KEY"] == amplitude["AMPLITUDE_EMULATOR_SECRET_KEY"]
    assert app["command"][:2] == ["python", "-c"]
    assert_standard_library_only(app["command"][2])  # it runs in a bare python image
    assert re.fullmatch(r"python:3\.\d+-slim(-[a-z]+)?", app["image"])


def test_the_persistent_variant_keeps_the_database_on_a_named_volume(
    compose: dict[str, Any], compose_persistent: dict[str, Any], volume: str, final: Stage
) -> None:
    assert set(compose_persistent["services"]) == {"amplitude"}, "an override of compose.yaml"
    service = compose_persistent["services"]["amplitude"]
    (mount,) = service["volumes"]
    source, target = mount.split(":")
    assert target == volume
    assert source in compose_persistent["volumes"], "a named volume, not a host path"
    assert "/" not in source
    merged = {
        **image_environment(final),
        **compose_environment(compose["services"]["amplitude"]),
        **compose_environment(service),
    }
    database = make_url(settings_from_environment(merged).database_url).database
    assert database is not None
    assert PurePosixPath(database).parent == PurePosixPath(volume)
    for text in strings_in(compose_persistent):
        assert "$" not in text


# --- The HEALTHCHECK and the example app against a running emulator -----------------------------


def subprocess_environment(variables: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without emulator settings or Python paths, plus `variables`."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(ENV_PREFIX)
        and name not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    environment.update(variables)
    return environment


def run_healthcheck(
    healthcheck: Healthcheck, environment: Mapping[str, str], *, python: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The HEALTHCHECK's argv as written (or with `python` replaced), under Docker's timeout."""
    argv = list(healthcheck.argv) if python is None else [python, *healthcheck.argv[1:]]
    try:
        return subprocess.run(
            argv,
            env=dict(environment),
            capture_output=True,
            text=True,
            timeout=healthcheck.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:  # Docker counts this as a failure too
        return subprocess.CompletedProcess(argv, 124, "", f"timed out: {error}")


def run_with_stdlib_only(
    healthcheck: Healthcheck, environment: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """The HEALTHCHECK's code under this interpreter with -I -S: the standard library only."""
    argv = [sys.executable, "-I", "-S", *healthcheck.argv[1:]]
    return subprocess.run(
        argv,
        env=subprocess_environment(environment),
        capture_output=True,
        text=True,
        timeout=healthcheck.timeout,
        check=False,
    )


def port_of(server: ServerThread) -> str:
    port = urllib.parse.urlsplit(server.base_url).port
    assert port is not None
    return str(port)


def test_healthcheck_passes_against_a_ready_emulator(
    healthcheck: Healthcheck, final: Stage, start_emulator: StartEmulator
) -> None:
    server = start_emulator()
    environment = {**image_environment(final), "AMPLITUDE_EMULATOR_PORT": port_of(server)}
    result = run_with_stdlib_only(healthcheck, environment)
    assert result.returncode == 0, result.stderr


def test_healthcheck_fails_while_the_seed_is_not_loaded(
    healthcheck: Healthcheck, final: Stage, start_emulator: StartEmulator, tmp_path: Path
) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text("not a state document", encoding="utf-8")
    server = start_emulator(seed=seed)  # /_emulator/ready answers 503 from now on
    environment = {**image_environment(final), "AMPLITUDE_EMULATOR_PORT": port_of(server)}
    result = run_with_stdlib_only(healthcheck, environment)
    assert result.returncode != 0
    assert "503" in result.stderr


def test_healthcheck_fails_when_nothing_listens(healthcheck: Healthcheck, final: Stage) -> None:
    environment = {**image_environment(final), "AMPLITUDE_EMULATOR_PORT": str(free_port())}
    result = run_with_stdlib_only(healthcheck, environment)
    assert result.returncode != 0
    assert "Connection refused" in result.stderr


def test_healthcheck_sends_the_admin_token(
    healthcheck: Healthcheck, final: Stage, start_emulator: StartEmulator
) -> None:
    server = start_emulator(admin_token="s3cret")
    environment = {**image_environment(final), "AMPLITUDE_EMULATOR_PORT": port_of(server)}
    refused = run_with_stdlib_only(healthcheck, environment)
    assert refused.returncode != 0
    assert "401" in refused.stderr
    token = {**environment, "AMPLITUDE_EMULATOR_ADMIN_TOKEN": "s3cret"}
    assert run_with_stdlib_only(healthcheck, token).returncode == 0


def test_the_example_app_maps_a_user_and_reads_it_back(compose: dict[str, Any]) -> None:
    """The app service's code, against an emulator configured as the amplitude service is."""
    emulator_env = compose_environment(compose["services"]["amplitude"])
    settings = dataclasses.replace(
        build_settings(environment_values(emulator_env)), port=0, log_level="warning"
    )
    app = compose["services"]["app"]
    with ServerThread(settings) as server:
        environment = {**compose_environment(app), "AMPLITUDE_URL": server.base_url}
        result = subprocess.run(
            [sys.executable, "-I", "-S", *app["command"][1:]],
            env=subprocess_environment(environment),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert json.loads(first) == {"code": 200}
    assert json.loads(second)["anonymous-42"]["mapped_to"][0]["user_id"] == "user-42"


# --- The image rehearsed without Docker -------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("0.0.0.0", 0))
        port: int = probe.getsockname()[1]
        return port


def copy_into_build_stage(build_stage: Stage, context: Path, workdir: Path) -> None:
    """The build stage's COPY instructions (`COPY file... dir/` and `COPY dir dir`), into a
    directory standing for its WORKDIR."""
    for copy in build_stage.all("COPY"):
        *sources, destination = copy.arguments.split()
        target = workdir / destination
        for source in sources:
            origin = context / source
            if origin.is_dir():
                shutil.copytree(origin, target, dirs_exist_ok=True)
            else:
                assert destination.endswith("/"), f"{copy}: COPY files into a directory/"
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout} s")
        time.sleep(0.2)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_the_image_rehearsed_without_docker(
    tmp_path: Path,
    build_stage: Stage,
    final: Stage,
    healthcheck: Healthcheck,
    volume: str,
    context_files: list[str],
    processes: list[subprocess.Popen[bytes]],
) -> None:
    """Build stage: the build context .dockerignore leaves, the stage's COPYs into its WORKDIR,
    its `pip wheel` RUN as written. Final stage: the wheel into a fresh virtual environment (the
    image installs it into its system Python), then CMD and HEALTHCHECK exactly as written, with
    the image's ENV. Two substitutions, because this is not root in a container: the volume
    directory /data becomes a temporary directory, and port 8000 a free port."""
    # The build stage.
    context = tmp_path / "context"
    for relative in context_files:
        (context / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, context / relative)
    (workdir_instruction,) = build_stage.all("WORKDIR")
    workdir = tmp_path / "build" / workdir_instruction.arguments.lstrip("/")
    copy_into_build_stage(build_stage, context, workdir)
    (wheel_run,) = [i for i in build_stage.all("RUN") if "pip wheel" in i.arguments]
    wheel_dir = re.search(r"--wheel-dir (\S+)", wheel_run.arguments)
    assert wheel_dir, "pip wheel --wheel-dir DIR"
    dist = tmp_path / "dist"
    command = wheel_run.arguments.replace(wheel_dir.group(0), f"--wheel-dir {dist}")
    # `python` is this test's interpreter: the same minor version as the image's (checked above).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    built = subprocess.run(
        ["/bin/sh", "-c", command],
        cwd=workdir,
        env=subprocess_environment({"PATH": path}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("*.whl")

    # The final stage: a fresh environment with the wheel and the dependencies it declares.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        env=subprocess_environment({"PIP_DISABLE_PIP_VERSION_CHECK": "1"}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr

    data = tmp_path / "data"  # stands for the volume
    data.mkdir()
    port = free_port()  # stands for 8000
    image_env = {
        name: value.replace(volume, str(data)) for name, value in image_environment(final).items()
    }
    image_env["AMPLITUDE_EMULATOR_PORT"] = str(port)
    environment = subprocess_environment(
        {
            **image_env,
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            # Strict response validation: the wheel's own document and dependencies must work.
            **contract_environment(),
        }
    )
    cmd = exec_form(final.last("CMD").arguments)
    executable = shutil.which(cmd[0], path=environment["PATH"])
    assert executable == str(venv / "bin" / cmd[0]), "the CMD runs the installed console script"
    assert shutil.which(healthcheck.argv[0], path=environment["PATH"]) == str(
        venv / "bin" / healthcheck.argv[0]
    )

    def healthy(env: Mapping[str, str] = environment) -> bool:
        return run_healthcheck(healthcheck, env).returncode == 0

    def start(env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"serve-{len(processes)}.log").open("wb")
        process = subprocess.Popen(
            cmd, env=dict(env), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        processes.append(process)
        return process

    def log_of(index: int) -> str:
        return (tmp_path / f"serve-{index}.log").read_text(encoding="utf-8", errors="replace")

    unhealthy = run_healthcheck(healthcheck, environment)
    assert unhealthy.returncode != 0, "nothing listens yet"

    server = start(environment)
    wait_for(
        lambda: server.poll() is not None or healthy(),
        timeout=30,
        what="a passing HEALTHCHECK",
    )
    assert server.poll() is None, log_of(0)
    assert f"listening on http://0.0.0.0:{port}" in log_of(0)
    base_url = f"http://127.0.0.1:{port}"
    mapping = json.dumps([{"user_id": "anon", "global_user_id": "known"}])
    form = urllib.parse.urlencode({"api_key": "docker-key", "mapping": mapping}).encode()
    with urllib.request.urlopen(f"{base_url}/usermap", data=form, timeout=10) as answer:
        assert json.load(answer) == {"code": 200}
    assert (data / "emulator.db").is_file(), "the database file is on the volume"
    # The wheel carries the published contract and serves it as written, and as JSON.
    published = (ROOT / "openapi" / "openapi.yaml").read_text(encoding="utf-8")
    with urllib.request.urlopen(f"{base_url}/openapi.yaml", timeout=10) as answer:
        assert answer.read().decode("utf-8") == published
    with urllib.request.urlopen(f"{base_url}/openapi.json", timeout=10) as answer:
        assert json.load(answer) == yaml.safe_load(published)
    with urllib.request.urlopen(f"{base_url}/_emulator/violations", timeout=10) as answer:
        assert json.load(answer) == {"mode": "strict", "violations": []}

    server.send_signal(signal.SIGTERM)  # docker stop
    server.wait(timeout=15)
    assert not healthy(), "nothing listens after the stop"

    # Restarted on the same volume (here with an admin token, which the healthcheck must send):
    # the mapping is still there.
    with_token = {**environment, "AMPLITUDE_EMULATOR_ADMIN_TOKEN": "docker-admin"}
    restarted = start(with_token)
    wait_for(
        lambda: restarted.poll() is not None or healthy(with_token),
        timeout=30,
        what="a passing HEALTHCHECK after the restart",
    )
    assert restarted.poll() is None, log_of(1)
    assert not healthy(), "without the token the control API refuses"
    auth = base64.b64encode(b"docker-key:any-secret").decode()
    read = urllib.request.Request(
        f"{base_url}/api/2/usermap?user_ids=anon", headers={"Authorization": f"Basic {auth}"}
    )
    with urllib.request.urlopen(read, timeout=10) as answer:
        assert json.load(answer)["anon"]["mapped_to"][0]["user_id"] == "known"
    restarted.send_signal(signal.SIGTERM)
    restarted.wait(timeout=15)

"""The Dockerfile and docker-compose.yml, checked without a Docker engine.

Both files are parsed as text (no Docker, no YAML library) and held to what the rest of the
project says: the image installs the Makefile's system packages and the project's own wheel
packages, runs `ebd serve` as a non-root user on the port it exposes; compose mounts the
shipped configs where they say their data lives, and gives the engine settings it accepts.
That the shipped mosquitto/redis configs equal render_docker_configs() is checked in
tests/integration/test_services.py.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest

from dispatcher.embedded.configs import render_docker_configs
from dispatcher.settings import Settings, load_settings
from tests.helpers import ROOT

DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
MAKEFILE = ROOT / "Makefile"
PYPROJECT = ROOT / "pyproject.toml"
MOSQUITTO_CONF = "config/mosquitto/mosquitto.conf"
REDIS_CONF = "config/redis/redis.conf"


# -- Dockerfile ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int  # where it starts, for messages
    keyword: str  # upper case
    args: str  # continuations joined


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with ``\\`` continuations joined; comment lines dropped, as Docker does."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker skips these, also inside a continued instruction
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped.removesuffix("\\").strip() if continued else stripped)
        if not continued:
            keyword, _, args = " ".join(pending).partition(" ")
            instructions.append(Instruction(start, keyword.upper(), args.strip()))
            pending = []
    assert not pending, f"Dockerfile ends inside a continued instruction (line {start})"
    return instructions


def exec_form(instruction: Instruction) -> list[str]:
    """The JSON array of a CMD/ENTRYPOINT/HEALTHCHECK CMD in exec form."""
    args = instruction.args
    if instruction.keyword == "HEALTHCHECK":
        args = re.sub(r"^(--\S+\s+)*CMD\s+", "", args)
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        value = None
    message = (
        f"Dockerfile line {instruction.line}: {instruction.keyword} should be in exec form "
        f'(a JSON array of strings such as ["ebd", "serve"]), got {instruction.args!r}'
    )
    assert isinstance(value, list), message
    assert all(isinstance(v, str) for v in value), message
    return value


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    """The variables set by ENV (KEY=VALUE form), later ones winning."""
    env: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.args):
                key, sep, value = word.partition("=")
                assert sep, (
                    f"Dockerfile line {instruction.line}: write ENV as KEY=VALUE, got {word!r}"
                )
                env[key] = value
    return env


def shell_commands(run_args: str) -> list[list[str]]:
    """A RUN line split into its simple commands (at ``&&``, ``||`` and ``;``)."""
    commands: list[list[str]] = [[]]
    lexer = shlex.shlex(run_args, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    for token in lexer:
        if token in {"&&", "||", ";", "|"}:
            commands.append([])
        else:
            commands[-1].append(token)
    return [command for command in commands if command]


def apt_installed(instructions: list[Instruction]) -> tuple[set[str], list[Instruction]]:
    packages: set[str] = set()
    runs: list[Instruction] = []
    for instruction in instructions:
        if instruction.keyword != "RUN":
            continue
        for command in shell_commands(instruction.args):
            words = [w for w in command if "=" not in w or w.startswith("-")]  # drop VAR=value
            if words[:2] == ["apt-get", "install"]:
                runs.append(instruction)
                packages.update(w for w in words[2:] if not w.startswith("-"))
    return packages, runs


def resolve(workdir: PurePosixPath, path: str) -> PurePosixPath:
    return PurePosixPath(path) if path.startswith("/") else workdir / path


def copies(instructions: list[Instruction]) -> list[tuple[list[str], PurePosixPath]]:
    """Each COPY's sources and its destination as an absolute path (after WORKDIR)."""
    workdir = PurePosixPath("/")
    found: list[tuple[list[str], PurePosixPath]] = []
    for instruction in instructions:
        if instruction.keyword == "WORKDIR":
            workdir = resolve(workdir, instruction.args)
        elif instruction.keyword == "COPY":
            words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
            *sources, destination = words
            found.append(([s.rstrip("/") for s in sources], resolve(workdir, destination)))
    return found


def workdir_at_cmd(instructions: list[Instruction]) -> PurePosixPath:
    workdir = PurePosixPath("/")
    for instruction in instructions:
        if instruction.keyword == "WORKDIR":
            workdir = resolve(workdir, instruction.args)
    return workdir


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    assert DOCKERFILE.is_file(), f"{DOCKERFILE} is missing"
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert found, f"the Dockerfile has no {keyword} instruction"
    # Docker uses the last one; more than one is a leftover.
    assert len(found) == 1, f"the Dockerfile has {len(found)} {keyword} instructions: {found}"
    return found[0]


def makefile_system_packages() -> list[str]:
    text = MAKEFILE.read_text(encoding="utf-8")
    match = re.search(r"^SYSTEM_PACKAGES\s*:?=\s*(.*)$", text, re.MULTILINE)
    assert match, "the Makefile has no `SYSTEM_PACKAGES := ...` line to compare the image with"
    packages = match.group(1).split("#")[0].split()
    assert packages, "the Makefile's SYSTEM_PACKAGES is empty"
    return packages


def pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


def test_base_image_is_python_311_slim(dockerfile: list[Instruction]) -> None:
    froms = [i for i in dockerfile if i.keyword == "FROM"]
    assert froms, "the Dockerfile has no FROM"
    image = froms[-1].args.split()[0]
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", image), (
        f"the runtime image should be python:3.11-slim(-bookworm), the Python pyproject.toml "
        f"and mypy target; got {image!r}"
    )


def test_image_installs_the_makefiles_system_packages(dockerfile: list[Instruction]) -> None:
    wanted = makefile_system_packages()
    installed, runs = apt_installed(dockerfile)
    assert runs, "the Dockerfile never runs `apt-get install`"
    missing = [p for p in wanted if p not in installed]
    assert not missing, (
        f"the image does not apt-get install {missing} from the Makefile's SYSTEM_PACKAGES "
        f"{wanted}: the embedded default (no MQTT/Redis URL) would fail in the container"
    )
    for run in runs:
        assert "--no-install-recommends" in run.args, (
            f"Dockerfile line {run.line}: apt-get install without --no-install-recommends"
        )
        assert "apt-get update" in run.args, (
            f"Dockerfile line {run.line}: run apt-get update in the same RUN as the install, "
            f"or a cached layer installs from stale package lists"
        )
        assert "rm -rf /var/lib/apt/lists" in run.args, (
            f"Dockerfile line {run.line}: remove /var/lib/apt/lists in the same RUN as the "
            f"install, so the package lists do not end up in the image"
        )


def test_image_pip_installs_the_project_with_its_packages(dockerfile: list[Instruction]) -> None:
    installs = [
        (instruction, command)
        for instruction in dockerfile
        if instruction.keyword == "RUN"
        for command in shell_commands(instruction.args)
        if command[:2] == ["pip", "install"] or command[1:3] == ["-m", "pip"]
    ]
    assert installs, "the Dockerfile never runs `pip install`"
    project_installs = [(i, c) for i, c in installs if "." in c]
    assert project_installs, f"no `pip install .` of the project among {installs}"
    for instruction, command in project_installs:
        editable = {"-e", "--editable"} & set(command)
        assert not editable, (
            f"Dockerfile line {instruction.line}: install the project non-editable (no {editable})"
        )
        assert not any("[dev]" in word for word in command), (
            f"Dockerfile line {instruction.line}: the image needs the runtime dependencies "
            f"only, not the dev extras"
        )
    # Everything the wheel is built from must be in the build folder.
    build_dir = workdir_before(dockerfile, project_installs[0][0])
    # A file copied into a folder lands at folder/name; a folder's contents at the destination.
    copied: set[PurePosixPath] = set()
    for sources, destination in copies(dockerfile):
        copied.add(destination)
        copied.update(destination / PurePosixPath(source).name for source in sources)
    wheel_packages = pyproject()["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    readme = pyproject()["project"]["readme"]
    for needed in ["pyproject.toml", readme, *wheel_packages]:
        assert build_dir / needed in copied, (
            f"the Dockerfile does not COPY {needed} into {build_dir} before `pip install .`; "
            f"the wheel (packages {wheel_packages}, readme {readme}) needs it"
        )


def workdir_before(instructions: list[Instruction], target: Instruction) -> PurePosixPath:
    workdir = PurePosixPath("/")
    for instruction in instructions:
        if instruction is target:
            break
        if instruction.keyword == "WORKDIR":
            workdir = resolve(workdir, instruction.args)
    return workdir


def test_image_ships_the_config_folder_where_relative_paths_resolve(
    dockerfile: list[Instruction],
) -> None:
    # Installed non-editable, Settings.regions_path() cannot fall back to the project folder,
    # so the default regions.file (relative) must exist under the working directory.
    workdir = workdir_at_cmd(dockerfile)
    config_copies = [dest for sources, dest in copies(dockerfile) if "config" in sources]
    assert workdir / "config" in config_copies, (
        f"the Dockerfile should COPY config/ to {workdir / 'config'} (the working directory at "
        f"CMD is {workdir}); it copies config to {config_copies}"
    )
    regions_file = Settings().regions.file
    assert regions_file.parts[0] == "config", (
        f"the default regions.file {regions_file} is not under config/, which the image copies"
    )
    assert (ROOT / regions_file).is_file(), f"{regions_file} is not in the repository"


def test_image_runs_ebd_serve_as_a_non_root_user(dockerfile: list[Instruction]) -> None:
    cmd = only(dockerfile, "CMD")
    command = exec_form(cmd)
    assert command[:2] == ["ebd", "serve"], f"CMD should run `ebd serve`, got {command}"
    assert "ebd" in pyproject()["project"]["scripts"], "pyproject.toml has no `ebd` script"
    assert not any(i.keyword == "ENTRYPOINT" for i in dockerfile), (
        "an ENTRYPOINT would change what CMD (and compose's `command:`) runs"
    )
    users = [i for i in dockerfile if i.keyword == "USER" and i.line < cmd.line]
    assert users, "no USER before CMD: the engine would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}, f"the last USER before CMD is {user!r}, which is root"


def test_image_exposes_the_port_the_engine_listens_on(dockerfile: list[Instruction]) -> None:
    exposed = {
        word.split("/")[0] for i in dockerfile if i.keyword == "EXPOSE" for word in i.args.split()
    }
    assert "8080" in exposed, f"the Dockerfile should EXPOSE 8080, it exposes {exposed}"
    env = env_of(dockerfile)
    listen = env.get("EBD_API__LISTEN")
    assert listen == "0.0.0.0:8080", (
        f"ENV EBD_API__LISTEN should be 0.0.0.0:8080 (the default 127.0.0.1 is unreachable "
        f"from outside the container), got {listen!r}"
    )
    assert env.get("EBD_STATE_DIR") == "/var/lib/ebd", (
        f"ENV EBD_STATE_DIR should be /var/lib/ebd, got {env.get('EBD_STATE_DIR')!r}"
    )


def test_image_env_is_valid_settings(
    dockerfile: list[Instruction], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No EBD_ variable of the machine running the tests is set (tests/conftest.py).
    env = {k: v for k, v in env_of(dockerfile).items() if k.startswith("EBD_")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(None)
    assert settings.api.port == 8080, f"the image's EBD_ variables give {settings.api.listen}"
    assert str(settings.state_dir) == env["EBD_STATE_DIR"], (
        f"EBD_STATE_DIR did not come through: state_dir is {settings.state_dir}"
    )


def test_image_has_a_curl_free_healthcheck(dockerfile: list[Instruction]) -> None:
    healthcheck = only(dockerfile, "HEALTHCHECK")
    command = exec_form(healthcheck)
    text = " ".join(command)
    assert "/healthz" in text, f"the HEALTHCHECK should probe /healthz: {command}"
    assert command[0].startswith("python"), (
        f"the slim image has no curl or wget; the HEALTHCHECK should use python: {command}"
    )


# -- docker-compose.yml -------------------------------------------------------------------------


def _strip_comment(line: str) -> str:
    quote = ""
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip()
    return line.rstrip()


def _scalar(text: str) -> Any:
    text = text.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise AssertionError(
                f"docker-compose.yml: write flow lists as JSON arrays, got {text!r}"
            ) from exc
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    assert not text.startswith(("{", "&", "*", "!", "|", ">")), (
        f"docker-compose.yml uses YAML this test's small parser does not read: {text!r}"
    )
    return text


def parse_compose(text: str) -> Any:
    """The block-style YAML subset a compose file is written in: mappings, lists of scalars,
    JSON-style flow lists. PyYAML is not a dependency of the project, so no YAML library."""
    lines = []
    for raw in text.splitlines():
        line = _strip_comment(raw)
        if line.strip():
            assert "\t" not in line[: len(line) - len(line.lstrip())], "tab indentation"
            lines.append((len(line) - len(line.lstrip()), line.strip()))

    def block(index: int, indent: int) -> tuple[Any, int]:
        if lines[index][1].startswith("- "):
            items: list[Any] = []
            while index < len(lines) and lines[index][0] == indent:
                content = lines[index][1]
                if not content.startswith("- "):
                    break
                assert not re.match(r"- [\w.-]+:(\s|$)", content), (
                    f"docker-compose.yml: lists of mappings are not read here: {content!r}"
                )
                items.append(_scalar(content[2:]))
                index += 1
            return items, index
        mapping: dict[str, Any] = {}
        while index < len(lines) and lines[index][0] == indent:
            content = lines[index][1]
            key, sep, rest = content.partition(":")
            assert sep, f"docker-compose.yml: expected `key: value`, got {content!r}"
            assert not rest or rest[0] == " ", (
                f"docker-compose.yml: expected a space after the colon, got {content!r}"
            )
            key = _scalar(key)
            index += 1
            if rest.strip():
                mapping[key] = _scalar(rest)
            elif index < len(lines) and (
                lines[index][0] > indent
                or (lines[index][0] == indent and lines[index][1].startswith("- "))
            ):
                mapping[key], index = block(index, lines[index][0])
            else:
                mapping[key] = None
        return mapping, index

    value, end = block(0, lines[0][0])
    assert end == len(lines), f"docker-compose.yml: could not read from {lines[end][1]!r} on"
    return value


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    compose = parse_compose(COMPOSE_FILE.read_text(encoding="utf-8"))
    found = compose.get("services") or {}
    missing = {"mosquitto", "redis", "ebd"} - set(found)
    assert not missing, f"docker-compose.yml has no service {sorted(missing)}"
    return found


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (host path or volume name) of a service's short-form volumes."""
    result: dict[str, str] = {}
    for entry in service.get("volumes") or []:
        source, _, rest = str(entry).partition(":")
        target = rest.split(":")[0]
        assert source, f"volume {entry!r} has no source; write SOURCE:/TARGET[:ro]"
        assert target.startswith("/"), f"volume {entry!r} has no /TARGET; write SOURCE:/TARGET"
        result[target] = source
    return result


def conf_value(relative_path: str, directive: str) -> str:
    """A directive's value in the rendered config (the shipped file equals the rendering)."""
    text = render_docker_configs()[relative_path]
    match = re.search(rf"^{re.escape(directive)}\s+(.+)$", text, re.MULTILINE)
    assert match, f"{relative_path} has no {directive} directive"
    return match.group(1).strip().strip('"')


def test_compose_mounts_every_shipped_config_file_that_exists(services: dict[str, Any]) -> None:
    bind_sources = {
        source
        for service in services.values()
        for source in mounts(service).values()
        if source.startswith(".")
    }
    for source in sorted(bind_sources):
        assert (ROOT / source).is_file(), (
            f"docker-compose.yml mounts {source}, which is not in the repository"
        )
    for shipped in render_docker_configs():
        assert f"./{shipped}" in bind_sources, (
            f"docker-compose.yml does not mount {shipped}, the config rendered for it"
        )


@pytest.mark.parametrize(
    ("name", "image", "why"),
    [
        ("mosquitto", "eclipse-mosquitto:2", "the config is for 2.x"),
        ("redis", "redis:7", "the config uses 7.x directives"),
    ],
)
def test_compose_servers_run_the_images_their_configs_are_for(
    services: dict[str, Any], name: str, image: str, why: str
) -> None:
    got = str(services[name].get("image", ""))
    assert got.startswith(image), f"{name} should run {image} ({why}), got {got!r}"


def assert_data_volume(volumes: dict[str, str], conf: str, directive: str, lost: str) -> None:
    """The data folder that ``directive`` of ``conf`` names is a named volume."""
    data = conf_value(conf, directive)
    assert data in volumes, (
        f"{directive} is {data} in {conf}, but no volume is mounted there (mounts {volumes}): "
        f"{lost} would die with the container"
    )
    assert not volumes[data].startswith("."), (
        f"the data folder {data} should be a named volume, not {volumes[data]}"
    )


def test_compose_mosquitto_uses_the_shipped_config_and_its_data_folder(
    services: dict[str, Any],
) -> None:
    mosquitto = services["mosquitto"]
    volumes = mounts(mosquitto)
    # The image's default command reads this path.
    assert volumes.get("/mosquitto/config/mosquitto.conf") == f"./{MOSQUITTO_CONF}", (
        f"mosquitto should mount ./{MOSQUITTO_CONF} at /mosquitto/config/mosquitto.conf, "
        f"mounts {volumes}"
    )
    assert_data_volume(
        volumes, MOSQUITTO_CONF, "persistence_location", "sessions and queued alerts"
    )
    nofile = (mosquitto.get("ulimits") or {}).get("nofile") or {}
    soft = int(nofile.get("soft", 0)) if isinstance(nofile, dict) else int(nofile)
    assert soft >= 20000, (
        f"mosquitto needs nofile >= 20000 (one open file per terminal), ulimits are {nofile}"
    )


def test_compose_redis_uses_the_shipped_config_and_its_data_folder(
    services: dict[str, Any],
) -> None:
    redis = services["redis"]
    command = redis.get("command")
    if isinstance(command, str):
        command = command.split()
    assert isinstance(command, list), f"redis should have a command, got {command!r}"
    assert command[:1] == ["redis-server"], f"redis should run redis-server, got {command!r}"
    assert len(command) > 1, f"redis should run `redis-server CONFIG`, got {command!r}"
    volumes = mounts(redis)
    assert volumes.get(command[1]) == f"./{REDIS_CONF}", (
        f"redis-server reads {command[1]}, which should be ./{REDIS_CONF}; mounts {volumes}"
    )
    assert_data_volume(volumes, REDIS_CONF, "dir", "the AOF")


def test_compose_engine_is_built_here_and_reads_the_mounted_config(
    services: dict[str, Any], dockerfile: list[Instruction]
) -> None:
    ebd = services["ebd"]
    assert ebd.get("build") == ".", f"ebd should be built from the Dockerfile here: {ebd}"
    depends = ebd.get("depends_on") or []
    assert {"mosquitto", "redis"} <= set(depends), (
        f"ebd should depend on mosquitto and redis, depends_on is {depends}"
    )
    command = ebd.get("command")
    assert isinstance(command, list), (
        f"ebd's command should be a list like [ebd, serve, --config, FILE], got {command!r}"
    )
    assert command[:2] == ["ebd", "serve"], f"ebd's command should run `ebd serve`: {command}"
    assert "--config" in command, f"ebd's command passes no --config: {command}"
    config_path = command[command.index("--config") + 1]
    volumes = mounts(ebd)
    assert config_path in volumes, (
        f"ebd serve --config {config_path}, but nothing is mounted there (mounts {volumes}); "
        f"`ebd serve` stops when the config file is missing"
    )
    assert (ROOT / volumes[config_path]).is_file(), f"{volumes[config_path]} is missing"
    published = [str(port).rsplit(":", 1)[-1] for port in ebd.get("ports") or []]
    exposed = {w for i in dockerfile if i.keyword == "EXPOSE" for w in i.args.split()}
    assert published, "ebd publishes no port: the API is unreachable from the host"
    assert set(published) <= exposed, (
        f"ebd publishes container ports {published}, the image exposes {exposed}"
    )


def test_compose_engine_environment_is_valid_settings(
    services: dict[str, Any],
    dockerfile: list[Instruction],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # No EBD_ variable of the machine running the tests is set (tests/conftest.py).
    ebd = services["ebd"]
    environment = ebd.get("environment") or {}
    if isinstance(environment, list):  # the `- KEY=value` form
        environment = dict(str(item).partition("=")[::2] for item in environment)
    for key in ("EBD_MQTT__URL", "EBD_REDIS__URL"):
        assert key in environment, (
            f"ebd needs {key}, or it starts its own servers inside the container; "
            f"environment is {environment}"
        )
    # What the container sees: the image's ENV, then compose's environment over it.
    image_env = {k: v for k, v in env_of(dockerfile).items() if k.startswith("EBD_")}
    for key, value in {**image_env, **environment}.items():
        monkeypatch.setenv(key, str(value))
    # The offices file is generated on the first start (the `secrets` service): here, the list
    # it is made from, with a token hash as the generated one has.
    offices = json.loads((ROOT / "config/offices.example.json").read_text(encoding="utf-8"))
    generated = tmp_path / "offices.json"
    generated.write_text(
        json.dumps([{**o, "token_sha256": f"{i:064x}"} for i, o in enumerate(offices)])
    )
    monkeypatch.setenv("EBD_OFFICES_FILE", str(generated))

    settings = load_settings(None)
    assert [o.id for o in settings.offices] == [o["id"] for o in offices]
    assert settings.mqtt.url == environment["EBD_MQTT__URL"], (
        f"EBD_MQTT__URL did not come through: mqtt.url is {settings.mqtt.url!r}"
    )
    assert settings.redis.url == environment["EBD_REDIS__URL"], (
        f"EBD_REDIS__URL did not come through: redis.url is {settings.redis.url!r}"
    )

    # The URLs name the compose services on the ports their shipped configs listen on.
    mqtt = urlsplit(settings.mqtt.url)
    listener_port = conf_value(MOSQUITTO_CONF, "listener").split()[0]
    assert (mqtt.hostname, str(mqtt.port)) == ("mosquitto", listener_port), (
        f"EBD_MQTT__URL {settings.mqtt.url} should point at the mosquitto service on port "
        f"{listener_port} (the listener in {MOSQUITTO_CONF})"
    )
    redis = urlsplit(settings.redis.url)
    redis_port = conf_value(REDIS_CONF, "port")
    assert (redis.hostname, str(redis.port)) == ("redis", redis_port), (
        f"EBD_REDIS__URL {settings.redis.url} should point at the redis service on port "
        f"{redis_port} (the port in {REDIS_CONF})"
    )

    # The mounted file under the same environment: the variables win over the file, so the
    # engine listens on every interface although the example file says 127.0.0.1.
    config_path = ebd["command"][ebd["command"].index("--config") + 1]
    mounted = ROOT / mounts(ebd)[config_path]
    with_file = load_settings(mounted)
    assert with_file.mqtt.url == settings.mqtt.url, (
        f"with {mounted.name} mounted, mqtt.url is {with_file.mqtt.url}, not EBD_MQTT__URL"
    )
    assert with_file.redis.url == settings.redis.url, (
        f"with {mounted.name} mounted, redis.url is {with_file.redis.url}, not EBD_REDIS__URL"
    )
    assert with_file.api.listen == image_env["EBD_API__LISTEN"], (
        f"with {mounted.name} mounted the engine listens on {with_file.api.listen}, not the "
        f"image's EBD_API__LISTEN {image_env['EBD_API__LISTEN']}: unreachable from outside"
    )

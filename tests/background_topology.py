"""A pytest plugin (tests/conftest.py loads it). The topology test runs `benchmarks/topology.py --quick`: about 12
minutes, most of it waiting on servers (4.5 of 12.6 minutes of user CPU). Started in the background as soon as its
tests are collected, it overlaps the rest of the suite instead of adding to it; its tests are moved to the end of
the session and wait for its summary there.

Under pytest-xdist (`make test` runs `pytest -n 2`) every worker collects the same tests, so the run must still
start once: the controller makes its directory and hands it to the workers, the first worker to collect the
topology's tests claims it (an exclusive create) and starts it, any worker may run its tests, and the controller
stops it and cleans up when the whole session ends, after every worker.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"
WORKER_INPUT_KEY = "slate_topology_dir"


@dataclass
class BackgroundTopology:
    """A run of topology.py in a directory of its own; a shell around it writes its exit status to ``exit_code``,
    which any process can wait for (only the one that started it could wait on the process itself)."""
    out: Path

    @property
    def log(self) -> Path:
        return self.out / "topology.log"

    def start(self) -> None:
        command = '"$0" "$1" --out "$2" --quick > "$2/topology.log" 2>&1; echo $? > "$2/exit_code"'
        process = subprocess.Popen(["bash", "-c", command, sys.executable, str(REPO_ROOT / "benchmarks" /
                                    "topology.py"), str(self.out)], cwd=REPO_ROOT, start_new_session=True)
        (self.out / "pid").write_text(str(process.pid))  # its process group: start_new_session made it the leader

    def started(self) -> bool:
        return (self.out / "pid").is_file()

    def running(self) -> bool:
        try:
            os.killpg(int((self.out / "pid").read_text()), 0)
        except (OSError, ValueError):
            return False
        return not (self.out / "exit_code").is_file()

    def wait(self, timeout: float) -> int:
        """Its exit status; raises TimeoutError past ``timeout`` or when it died without one (killed)."""
        deadline = time.monotonic() + timeout
        while not (self.out / "exit_code").is_file():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the topology did not finish in {timeout / 60:.0f} minutes; its log: {self.log}")
            if not self.running() and not (self.out / "exit_code").is_file():
                raise TimeoutError(f"the topology run was killed before it finished; its log: {self.log}")
            time.sleep(2)
        return int((self.out / "exit_code").read_text())

    def stop(self) -> None:
        """SIGINT lets topology.py stop every server it started; SIGKILL after 90 s."""
        if not self.running():
            return
        pgid = int((self.out / "pid").read_text())
        os.killpg(pgid, signal.SIGINT)
        deadline = time.monotonic() + 90
        while self.running() and time.monotonic() < deadline:
            time.sleep(1)
        if self.running():
            os.killpg(pgid, signal.SIGKILL)


TOPOLOGY = pytest.StashKey[BackgroundTopology]()


def is_topology_test(item: pytest.Item) -> bool:
    return item.path.name == "test_topology.py"


def is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def is_xdist_controller(config: pytest.Config) -> bool:
    return not is_xdist_worker(config) and getattr(config.option, "dist", "no") != "no"


def pytest_configure(config: pytest.Config) -> None:
    if is_xdist_controller(config):
        config.stash[TOPOLOGY] = BackgroundTopology(Path(tempfile.mkdtemp(prefix="slate-topology-")))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:  # xdist, on the controller: one directory for every worker
    node.workerinput[WORKER_INPUT_KEY] = str(node.config.stash[TOPOLOGY].out)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=is_topology_test)  # stable: everything else keeps its order, the topology's tests come last


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    if config.option.collectonly or session.testsfailed:  # nothing runs, or a collection error stops it
        return
    if not VLLM_PYTHON.is_file() or not any(is_topology_test(item) for item in session.items):
        return  # the test itself says why it skips (or fails, under CI)
    if is_xdist_worker(config):
        topology = BackgroundTopology(Path(config.workerinput[WORKER_INPUT_KEY]))
        try:  # the first worker here starts it; the others find it started
            os.close(os.open(topology.out / "claim", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            pass
        else:
            topology.start()
    else:
        topology = BackgroundTopology(Path(tempfile.mkdtemp(prefix="slate-topology-")))
        topology.start()
    config.stash[TOPOLOGY] = topology


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A session that ends early (-x, Ctrl-C) stops the run. Its directory goes (the exported judge model alone is
    ~0.5 GB), unless a test failed: then its logs stay. Under xdist the controller does this, after every worker."""
    topology = session.config.stash.get(TOPOLOGY, None)
    if topology is None or is_xdist_worker(session.config):
        return
    topology.stop()
    shutil.rmtree(topology.out / "judge_model", ignore_errors=True)
    if session.testsfailed == 0:
        shutil.rmtree(topology.out, ignore_errors=True)


@pytest.fixture(scope="session")
def background_topology(request: pytest.FixtureRequest) -> BackgroundTopology:
    """The run started at collection; a skip saying why there is none (a failure under CI, which needs it)."""
    topology = request.config.stash.get(TOPOLOGY, None)
    if topology is not None and (topology.out / "claim").is_file():
        for _ in range(60):  # another xdist worker claimed it a moment ago and is starting it
            if topology.started():
                break
            time.sleep(1)
    if topology is None or not topology.started():
        reason = "the topology needs vLLM's CPU build: run `make vllm`" if not VLLM_PYTHON.is_file() else \
            "the topology was not started: the collection had errors"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return topology

"""The topology test runs `benchmarks/topology.py --quick`: about 12 minutes, most of it waiting on servers (4.5 of
12.6 minutes of user CPU). Started in the background as soon as its tests are collected, it overlaps the rest of the
suite instead of adding to it; its tests are moved to the end of the session and wait for its summary there.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"


@dataclass
class BackgroundTopology:
    process: subprocess.Popen
    out: Path
    log: Path


TOPOLOGY = pytest.StashKey[BackgroundTopology]()


def is_topology_test(item: pytest.Item) -> bool:
    return item.path.name == "test_topology.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=is_topology_test)  # stable: everything else keeps its order, the topology's tests come last


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly or session.testsfailed:  # nothing runs, or a collection error stops it
        return
    if not VLLM_PYTHON.is_file() or not any(is_topology_test(item) for item in session.items):
        return  # the test itself says why it skips (or fails, under CI)
    out = Path(tempfile.mkdtemp(prefix="slate-topology-"))
    log = out / "topology.log"
    with log.open("w") as sink:
        process = subprocess.Popen([sys.executable, str(REPO_ROOT / "benchmarks" / "topology.py"), "--out",
                                    str(out), "--quick"], stdout=sink, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                   start_new_session=True)
    session.config.stash[TOPOLOGY] = BackgroundTopology(process, out, log)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A session that ends early (-x, Ctrl-C) stops the run; SIGINT lets it stop every server it started. Its
    directory goes (the exported judge model alone is ~0.5 GB), unless a test failed: then its logs stay."""
    topology = session.config.stash.get(TOPOLOGY, None)
    if topology is None:
        return
    if topology.process.poll() is None:
        os.killpg(topology.process.pid, signal.SIGINT)
        try:
            topology.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(topology.process.pid, signal.SIGKILL)
            topology.process.wait()
    shutil.rmtree(topology.out / "judge_model", ignore_errors=True)
    if session.testsfailed == 0:
        shutil.rmtree(topology.out, ignore_errors=True)


@pytest.fixture(scope="session")
def background_topology(request: pytest.FixtureRequest) -> BackgroundTopology:
    """The run started at collection; a skip saying why there is none (a failure under CI, which needs it)."""
    topology = request.config.stash.get(TOPOLOGY, None)
    if topology is None:
        reason = "the topology needs vLLM's CPU build: run `make vllm`" if not VLLM_PYTHON.is_file() else \
            "the topology was not started: the collection had errors"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return topology

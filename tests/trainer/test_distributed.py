from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from slate.rollout.policy import load_hf_policy


def test_two_gloo_processes_end_with_identical_parameters(tiny_world: Path, tiny_policy_dir: Path,
                                                          tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    worker = Path(__file__).parent / "ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29517", str(worker),
                             str(tiny_world), str(tiny_policy_dir), str(tmp_path)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = (tmp_path / "params_rank0.txt").read_text()
    rank1 = (tmp_path / "params_rank1.txt").read_text()
    assert rank0.startswith("2 ")  # really two processes
    assert rank0 == rank1
    initial = torch.cat([p.detach().flatten() for p in load_hf_policy(tiny_policy_dir).model.parameters()])
    assert rank0.split()[1] != f"{initial.double().sum().item():.12e}"  # and they trained

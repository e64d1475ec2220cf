"""The launch files in configs/accelerate/ are read the way `accelerate launch --config_file` reads them."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType

ACCELERATE = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
EXPECTED = {"ddp": DistributedType.MULTI_GPU, "fsdp": DistributedType.FSDP,
            "deepspeed_zero2": DistributedType.DEEPSPEED, "deepspeed_zero3": DistributedType.DEEPSPEED}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_reads_the_launch_file(name: str) -> None:
    path = ACCELERATE / f"{name}.yaml"
    config = load_config_from_file(str(path))
    assert config.distributed_type == EXPECTED[name] and config.num_processes == 8
    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    args, _, _ = _validate_launch_command(args)  # what `accelerate launch` runs before starting processes
    assert args.num_processes == 8
    if name == "fsdp":
        assert args.use_fsdp and config.mixed_precision == "bf16"
        assert config.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD"
        assert config.fsdp_config["fsdp_activation_checkpointing"] is True
    if name.startswith("deepspeed"):
        assert args.use_deepspeed and args.zero_stage == int(name[-1])


def test_the_cpu_launch_file_starts_two_gloo_processes() -> None:
    path = ACCELERATE / "cpu.yaml"
    config = load_config_from_file(str(path))
    assert config.num_processes == 2 and config.use_cpu
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", str(path), "t.py"]))
    assert args.num_processes == 2 and args.multi_gpu and args.use_cpu  # torch's launcher, gloo on the CPU

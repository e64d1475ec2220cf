"""Process-wide settings chosen from what the machine has, each detected, logged once and possible to switch off.

- ``keep_freed_memory``: glibc's malloc hands blocks above its mmap threshold (128 KiB, rising to at most 32 MiB)
  straight back to the kernel when they are freed, so the next tensor of that size starts on fresh pages that the
  kernel zeroes on first touch. A decode step allocates a new, slightly longer KV cache per layer and the update
  allocates activations of every size, so on a CPU this page-fault traffic was a large part of a step (a KV-cache
  ``torch.cat`` of 41 MB: 327 ms with the default, 57 ms with freed memory kept; docs/performance.md). We raise the
  mmap and trim thresholds to 1 GiB so freed memory is reused. Linux with glibc only; ``SLATE_KEEP_FREED_MEMORY=0``
  turns it off. Costs: the process keeps up to 1 GiB of freed heap instead of returning it.
- ``NO_HUB_KERNELS``: keyword arguments for every ``from_pretrained`` of a model the project runs (the policy, an
  in-process judge, the dense retriever's encoder). transformers 5.x swaps layers for Hugging Face Hub kernels by
  default, fetched from the Hub when a model first enters train or eval mode on a GPU: on an offline cluster node a
  run then fails at its first update (seen on an H100: ``kernels-community/rotary``, docs/gpu.md), and online it runs
  code fetched at run time that no config names. PyTorch's own layers run instead (transformers >= 4.56 takes the
  argument).
- ``describe_cpu``: the CPU capability torch dispatches to and whether bfloat16 is native (dtype choices use it).
- ``choose_bf16_autocast``/``autocast_bf16``: SFT and the RL update run their forward passes under bfloat16 autocast
  only where it is native (``auto``), log the choice, and warn when it is forced where bfloat16 is emulated (on an
  AVX2-only CPU many times slower than float32).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

NO_HUB_KERNELS = {"use_kernels": False}

M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
KEPT_BYTES = 1 << 30

_kept_freed_memory: bool | None = None
logger = logging.getLogger(__name__)


def keep_freed_memory() -> bool:
    """Raise glibc's mmap/trim thresholds once per process; True when in effect."""
    global _kept_freed_memory
    if _kept_freed_memory is not None:
        return _kept_freed_memory
    _kept_freed_memory = False
    if sys.platform != "linux" or os.environ.get("SLATE_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, another libc): nothing to tune
        return False
    _kept_freed_memory = bool(mallopt(M_MMAP_THRESHOLD, KEPT_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEPT_BYTES))
    return _kept_freed_memory


def native_bf16(device: torch.device | None = None) -> tuple[bool, str]:
    """Whether ``device`` (default: the CPU) computes bfloat16 natively, and what was detected (for the log).
    Without native support bf16 is emulated and slow: on an AVX2-only AMD EPYC, SFT under bf16 autocast ran 12x
    slower than in float32."""
    import torch

    device = device or torch.device("cpu")
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(), f"CUDA {torch.cuda.get_device_name(device)}"
    capability = torch.backends.cpu.get_cpu_capability()  # the vector ISA the kernels use: "AVX2", "AVX512", …
    # AVX512 alone has no bfloat16 dot products; these two do (private in torch.cpu, hence the guards)
    extras = [name for name, probe in (("AVX512_BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))
              if getattr(torch.cpu, probe, lambda: False)()]
    return bool(extras) or capability in ("AVX512_BF16", "AMX"), "+".join([capability, *extras])


def use_bf16_autocast(setting: bool | Literal["auto"], native: bool) -> bool:
    """``auto`` follows the hardware; ``true``/``false`` force it."""
    return native if setting == "auto" else setting


def choose_bf16_autocast(setting: bool | Literal["auto"], device: torch.device, *, what: str, knob: str,
                         fp32_part: str = "", log: logging.Logger = logger, announce: bool = True) -> bool:
    """Decide bfloat16 autocast for ``what`` ("SFT", "update") from ``setting`` and the device, log the choice on
    ``log`` with what was detected (when ``announce``: one process of many says it), and warn when it is forced where
    bfloat16 is emulated, since there it runs many times slower."""
    native, detected = native_bf16(device)
    enabled = use_bf16_autocast(setting, native)
    if announce:
        log.info("%s: forward passes in %s (%s=%s; %s, native bfloat16: %s)", what,
                 f"bfloat16 autocast{fp32_part}" if enabled else "float32", knob, setting, detected,
                 "yes" if native else "no")
    if enabled and not native:
        log.warning("%s: bfloat16 autocast forced on a device without native bfloat16 (%s): expect it to run many "
                    "times slower than float32", what, detected)
    return enabled


def autocast_bf16(device: torch.device | str, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on ``device`` when ``enabled``; a no-op context otherwise."""
    import torch

    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def describe_cpu() -> dict[str, object]:
    """What the CPU offers, for logs and dtype choices: torch's dispatch capability and whether bf16 is native."""
    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": native_bf16()[0],
            "threads": torch.get_num_threads(), "kept_freed_memory": bool(_kept_freed_memory)}

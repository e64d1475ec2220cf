"""``slate serve-policy``: start a vLLM server for a policy with the flags the trainer's weight sync needs.

    slate serve-policy --policy runs/sft --lora --port 8100

Which vLLM: ``--vllm-python``, else ``.venv-vllm`` in the project (``make vllm``), else this interpreter if it can
import vllm, else ``vllm`` on PATH. Flags: ``--dtype`` (float32 by default, the trainer's dtype, so the
server's and the trainer's log-probs agree), ``--logprobs-mode processed_logprobs`` (log-probs under the
temperature the trainer uses), ``VLLM_SERVER_DEV_MODE=1`` (full sync: ``reload_weights``), and with ``--lora``
runtime LoRA loading (``--enable-lora``, ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1``). Without a GPU it adds
``--enforce-eager`` (ready in under a minute instead of several) and ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB).
It binds 127.0.0.1 unless ``--host`` says otherwise: the dev-mode endpoints must not face a network.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.text import Text

from slate.cli.common import console, fail, out
from slate.errors import SlateError

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def find_vllm(vllm_python: Path | None = None) -> list[str]:
    """The command that starts vLLM's OpenAI-compatible server (without its arguments)."""
    module = ["-m", "vllm.entrypoints.openai.api_server"]
    if vllm_python is not None:
        if not vllm_python.is_file():
            raise SlateError(f"--vllm-python {vllm_python}: no such file.")
        return [str(vllm_python), *module]
    for root in (Path.cwd(), PROJECT_ROOT):
        python = root / ".venv-vllm" / "bin" / "python"
        if python.is_file():
            return [str(python), *module]
    if importlib.util.find_spec("vllm") is not None:
        return [sys.executable, *module]
    if shutil.which("vllm"):
        return ["vllm", "serve"]
    raise SlateError("no vLLM found: run `make vllm` (CPU build in .venv-vllm), or `pip install vllm` on a GPU "
                     "machine, or pass --vllm-python PATH.")


CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)  # vLLM 0.32's CPU attention kernels


def check_cpu_head_size(policy_dir: Path) -> None:
    """vLLM's CPU attention has kernels for some head sizes only; anything else dies at the first request."""
    config = json.loads((policy_dir / "config.json").read_text())
    heads = config.get("num_attention_heads")
    head_dim = config.get("head_dim") or (config["hidden_size"] // heads if heads and "hidden_size" in config else None)
    if head_dim is not None and head_dim not in CPU_HEAD_SIZES:
        raise SlateError(f"{policy_dir}: head size {head_dim} (hidden_size / num_attention_heads) has no vLLM CPU "
                         f"attention kernel (sizes {', '.join(map(str, CPU_HEAD_SIZES))}); build the tiny policy "
                         "with e.g. model.tiny.hidden_size=64 model.tiny.num_heads=2, or serve it on a GPU.")


def untied_copy(policy_dir: Path, out_dir: Path) -> Path:
    """``policy_dir`` with its output head untied from the input embeddings (same values, stored twice): vLLM's CPU
    backend packs a private copy of a tied head that ``reload_weights`` never refreshes, so full weight sync needs
    the head as a weight of its own. Files are linked, not copied; only config.json and the head are new."""
    from safetensors import safe_open

    from slate.rollout.weight_sync import add_head_file

    out_dir.mkdir(parents=True, exist_ok=True)
    for item in policy_dir.iterdir():
        if item.name != "config.json" and not (out_dir / item.name).exists():
            target = out_dir / item.name
            if item.name == "model.safetensors.index.json":
                target.write_text(item.read_text())  # gains an entry below: a copy, not a link
            else:
                target.symlink_to(item.resolve())
    config = json.loads((policy_dir / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    head = None
    for shard in sorted(policy_dir.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as tensors:
            if "model.embed_tokens.weight" in tensors.keys():
                head = tensors.get_tensor("model.embed_tokens.weight")
    if head is None:
        raise SlateError(f"{policy_dir}: tied embeddings but no model.embed_tokens.weight in its safetensors; serve "
                         "it on a GPU, or untie it before serving.")
    add_head_file(out_dir, head.contiguous())
    return out_dir


def server_command(policy_dir: Path, port: int, host: str = "127.0.0.1", lora: bool = False,
                   max_lora_rank: int = 16, dtype: str = "float32", eager: bool | None = None,
                   max_model_len: int | None = None, extra: list[str] | None = None,
                   vllm_python: Path | None = None, work_dir: Path | None = None,
                   served_model_name: str | None = None, weight_sync: bool = True) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of a vLLM server for ``policy_dir`` that the trainer can sync. On a CPU a tied policy
    is served from an untied copy written under ``work_dir`` (a new temporary directory if None). Requests name the
    model ``served_model_name`` (default: the directory's absolute path). ``weight_sync=False`` (a judge) leaves
    the dev-mode endpoints (``/collective_rpc``, ``/reset_prefix_cache``) closed."""
    if not (policy_dir / "config.json").is_file():
        raise SlateError(f"{policy_dir}: not a policy directory (no config.json). Pass the output of `slate sft` or "
                         "`slate train` (its policy/ folder).")
    on_cpu = shutil.which("nvidia-smi") is None
    served_dir = policy_dir.resolve()
    if on_cpu:
        check_cpu_head_size(policy_dir)
        if json.loads((policy_dir / "config.json").read_text()).get("tie_word_embeddings"):
            served_dir = untied_copy(policy_dir, (work_dir or Path(tempfile.mkdtemp(prefix="slate-serve-"))) / "untied")
    launcher = find_vllm(vllm_python)
    model = [str(served_dir)] if launcher[-1] == "serve" else ["--model", str(served_dir)]
    argv = [*launcher, *model, "--served-model-name", served_model_name or str(policy_dir.resolve()), "--host", host,
            "--port", str(port), "--dtype", dtype,
            "--logprobs-mode", "processed_logprobs", "--uvicorn-log-level", "warning"]
    if eager if eager is not None else on_cpu:
        argv.append("--enforce-eager")
    if on_cpu:
        # vLLM 0.32 on a CPU kills its engine when a seeded request's prefill is split over two steps ("CPU
        # Generator does not use offset"): prefill every prompt whole
        context = max_model_len or json.loads((policy_dir / "config.json").read_text()).get("max_position_embeddings",
                                                                                             4096)
        argv += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(8192, context))]
    if max_model_len is not None:
        argv += ["--max-model-len", str(max_model_len)]
    env = dict(os.environ)
    if weight_sync:
        env["VLLM_SERVER_DEV_MODE"] = "1"  # /collective_rpc (reload_weights) and /reset_prefix_cache
    else:
        env.pop("VLLM_SERVER_DEV_MODE", None)
    if lora:
        argv += ["--enable-lora", "--max-loras", "2", "--max-lora-rank", str(max_lora_rank)]
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "1"
    if on_cpu:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return argv + list(extra or []), env


def wait_until_healthy(url: str, process: subprocess.Popen, timeout_s: float) -> float:
    """Seconds until ``url``/v1/models answers; raises if the process exits or the time runs out."""
    import httpx

    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if process.poll() is not None:
            raise SlateError(f"the vLLM server for {url} exited with code {process.returncode} before it was ready; "
                             "its log says why (see above or --log).")
        try:
            if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(1.0)
    raise SlateError(f"the vLLM server for {url} was not ready after {timeout_s:.0f} s; raise --ready-timeout or "
                     "check its log.")


def stop(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """Stop the server and the engine processes it spawned (they share its process group)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def local_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a server bound to ``host``."""
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"


def run_server(argv: list[str], env: dict[str, str], url: str, log: Path | None, ready_timeout: float,
               ready_message: Callable[[float], str], work_dir: Path | None = None) -> int:
    """Start the server, print ``ready_message(seconds)`` once ``url``/v1/models answers, and wait until it exits
    or this process is stopped (Ctrl-C, SIGTERM): the server and its engine processes are then stopped too, and
    ``work_dir`` is removed. Returns the server's exit code; an error before it is ready ends the command (exit 1)."""
    console.print(f"starting vLLM: {' '.join(argv)}")
    sink = log.open("w") if log is not None else None
    process = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT if sink else None,
                               start_new_session=True)  # its own group: stopping it stops its engine too

    def on_signal(signum: int, _frame: object) -> None:
        # only unwind here: the `finally` below stops the server (stopping it inside the handler would wait on
        # the lock that the interrupted `process.wait()` holds)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        seconds = wait_until_healthy(url, process, ready_timeout)
        out.print(Text(ready_message(seconds)), soft_wrap=True)
        sys.stdout.flush()
        return process.wait()
    except SlateError as error:
        stop(process)
        fail(error)
    finally:
        stop(process)
        if work_dir is not None:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 1  # not reached: fail() exits


def register(app: typer.Typer) -> None:
    @app.command("serve-policy")
    def serve_policy(
        policy_dir: Path = typer.Option(..., "--policy", help="The policy directory (SFT or RL output)."),
        lora: bool = typer.Option(False, "--lora", help="Accept LoRA adapters at run time "
                                                        "(rollout.weight_sync=lora)."),
        port: int = typer.Option(8100, "--port", help="Port to listen on."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; keep it local unless the trainer "
                                                             "runs on another machine."),
        max_lora_rank: int = typer.Option(16, help="Largest LoRA rank the server accepts (trainer.lora_rank)."),
        dtype: str = typer.Option("float32", help="Weights' dtype on the server; match model.dtype."),
        eager: bool | None = typer.Option(None, "--eager/--no-eager", help="--enforce-eager (default: without a "
                                                                           "GPU)."),
        max_model_len: int | None = typer.Option(None, help="Context length (default: the model's)."),
        vllm_python: Path | None = typer.Option(None, help="A Python that has vLLM (default: .venv-vllm)."),
        ready_timeout: float = typer.Option(600.0, help="Seconds to wait until the server answers."),
        log: Path | None = typer.Option(None, help="Write the server's output here instead of the terminal."),
        extra: list[str] = typer.Argument(None, help="More vLLM flags, after --."),
    ) -> None:
        """Serve a policy with vLLM for rollouts; prints the URL for rollout.server_urls once it answers."""
        work_dir = Path(tempfile.mkdtemp(prefix="slate-serve-"))
        try:
            argv, env = server_command(policy_dir, port, host, lora, max_lora_rank, dtype, eager, max_model_len,
                                       extra, vllm_python, work_dir)
        except SlateError as error:
            shutil.rmtree(work_dir, ignore_errors=True)
            fail(error)
        url = local_url(host, port)
        sync = "lora" if lora else "full"
        code = run_server(argv, env, url, log, ready_timeout, lambda seconds: (
            f"serving {policy_dir} at {url} (ready in {seconds:.0f} s). Train with rollout.backend=vllm "
            f"'rollout.server_urls=[{url}]' rollout.weight_sync={sync}"), work_dir)
        if code:
            fail(SlateError(f"the vLLM server exited with code {code}."))

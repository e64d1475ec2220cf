"""``slate index build|link`` and ``slate serve-retriever``: build retrieval indexes and serve them over HTTP.

``register(app)`` adds the commands to the main typer app; heavy imports (faiss, torch, fastapi) happen inside the
commands so ``slate --help`` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from slate.cli.common import fail, out
from slate.errors import SlateError

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"

index_app = typer.Typer(no_args_is_help=True, help="Build retrieval indexes (BM25 or dense faiss).")


def _quiet_openmp() -> None:
    """Idle OpenMP threads sleep instead of spinning. torch and faiss each keep a pool; spinning pools starve each
    other on a small or shared CPU (10x slower query encoding measured on 2 busy cores). Must run before either
    library is imported; an explicit OMP_WAIT_POLICY in the environment wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@index_app.command("build")
def index_build(
    corpus: Path = typer.Option(..., help="Corpus jsonl, one {id, contents} per line (contents = 'Title\\ntext')."),
    out_dir: Path = typer.Option(..., "--out", help="Index directory to write."),
    backend: str = typer.Option("bm25", help="bm25 (bm25s, no model) or dense (sentence-transformers + faiss)."),
    encoder: str = typer.Option(DEFAULT_ENCODER, help="Dense only: encoder hub name or local directory "
                                "(wiki-18 with Search-R1: intfloat/e5-base-v2)."),
    kind: str = typer.Option("flat", help="Dense only: flat (exact inner product) or hnsw (approximate)."),
    query_prefix: str = typer.Option("", help="Dense only: prepended to queries (E5: 'query: ')."),
    passage_prefix: str = typer.Option("", help="Dense only: prepended to passages (E5: 'passage: ')."),
    batch_size: int = typer.Option(64, min=1, help="Dense only: passages per encoder batch."),
    hnsw_m: int = typer.Option(32, min=2, help="Dense hnsw only: graph degree M."),
    copy_corpus: bool = typer.Option(True, help="Dense only: copy the corpus into the index directory "
                                     "(--no-copy-corpus records its path instead)."),
    device: str = typer.Option("cpu", help="Dense only: torch device for the encoder."),
) -> None:
    """Build a BM25 or dense index directory from a corpus jsonl."""
    _quiet_openmp()
    try:
        if backend == "bm25":
            from slate.retrieval.bm25 import Bm25Retriever

            out_dir.mkdir(parents=True, exist_ok=True)
            retriever = Bm25Retriever.from_corpus(corpus)
            retriever.save(out_dir)
            summary = f"{len(retriever.passages)} passages, bm25"
        elif backend == "dense":
            from slate.retrieval.dense import build_dense_index

            meta = build_dense_index(corpus, encoder, out_dir, kind=kind, query_prefix=query_prefix,
                                     passage_prefix=passage_prefix, batch_size=batch_size, hnsw_m=hnsw_m,
                                     copy_corpus=copy_corpus, device=device)
            summary = f"{meta.passages} passages, dense {meta.kind}, dim {meta.dim}, encoder {meta.encoder}"
        else:
            raise SlateError(f"unknown --backend {backend!r}; choose bm25 or dense.")
    except SlateError as error:
        fail(error)
    out.print(f"wrote index to {out_dir}: {summary}")


@index_app.command("link")
def index_link(
    faiss_index: Path = typer.Option(..., "--faiss", help="An existing faiss index, e.g. Search-R1's e5_Flat.index."),
    corpus: Path = typer.Option(..., help="The corpus jsonl it was built over, e.g. wiki-18.jsonl."),
    out_dir: Path = typer.Option(..., "--out", help="Index directory to write (meta and offsets only)."),
    encoder: str = typer.Option("intfloat/e5-base-v2", help="The encoder the index was built with."),
    query_prefix: str = typer.Option("query: ", help="Prepended to queries (E5: 'query: ')."),
    passage_prefix: str = typer.Option("passage: ", help="Recorded for reference (E5: 'passage: ')."),
) -> None:
    """Adopt an existing faiss index and corpus without re-encoding (offsets table + meta file)."""
    from slate.retrieval.dense import link_dense_index

    try:
        meta = link_dense_index(faiss_index, corpus, encoder, out_dir, query_prefix, passage_prefix)
    except SlateError as error:
        fail(error)
    out.print(f"linked {meta.passages} passages ({meta.kind}, dim {meta.dim}) into {out_dir}")


def serve_retriever(
    index: Path = typer.Option(..., help="Index directory (from `slate index build` or `slate index link`)."),
    host: str = typer.Option("127.0.0.1", help="Bind address; the server has no authentication."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    max_queries: int = typer.Option(512, min=1, help="Most queries per request (413 above)."),
    max_topk: int = typer.Option(100, min=1, help="Largest topk (422 above)."),
    default_topk: int = typer.Option(3, min=1, help="topk when a request sends null (Search-R1: 3)."),
    max_body_bytes: int = typer.Option(1_000_000, min=1, help="Largest request body (413 above)."),
    mmap: bool = typer.Option(True, help="Memory-map a dense faiss index instead of reading it into RAM."),
) -> None:
    """Serve an index on POST /retrieve (Search-R1's contract) and GET /health."""
    _quiet_openmp()
    try:
        from slate.retrieval.server import ServerLimits, serve

        if default_topk > max_topk:
            raise SlateError(f"--default-topk {default_topk} exceeds --max-topk {max_topk}; lower one of them.")
        limits = ServerLimits(max_queries=max_queries, max_topk=max_topk, default_topk=default_topk,
                              max_body_bytes=max_body_bytes)
        serve(index, host=host, port=port, limits=limits, mmap=mmap)
    except ImportError as error:
        fail(SlateError(f"serve-retriever needs fastapi and uvicorn ({error}); install slate-rl[server]."))
    except SlateError as error:
        fail(error)


def register(app: typer.Typer) -> None:
    """Add ``index build``, ``index link`` and ``serve-retriever`` to the ``slate`` app."""
    app.add_typer(index_app, name="index")
    app.command("serve-retriever")(serve_retriever)

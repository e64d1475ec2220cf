"""The ``slate`` command line. Only this package prints; everything below it logs."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from slate.errors import SlateError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="slate-rl: RL for search-augmented reasoning.")
world_app = typer.Typer(no_args_is_help=True, help="Build and inspect the synthetic multi-hop world.")
app.add_typer(world_app, name="world")
console = Console(stderr=True)
out = Console()


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False)], force=True)


def fail(error: Exception) -> None:
    """Print a SlateError as one red line and exit 1: bad input never shows a traceback."""
    console.print(f"[bold red]error:[/] {error}")
    raise typer.Exit(code=1)


@world_app.command("build")
def world_build(
    out_dir: Path = typer.Option(..., "--out", help="Directory to write corpus.jsonl, train/dev/test.jsonl."),
    seed: int = typer.Option(0, help="Random seed; the same seed and size give byte-identical files."),
    size: str = typer.Option("default", help="World size preset: tiny, small or default."),
) -> None:
    """Build a synthetic world: a fictional corpus and 1–4-hop questions with gold chains."""
    from slate.world.build import build_world, write_world

    try:
        summary = write_world(build_world(seed=seed, size=size), out_dir, seed=seed, size=size)
    except SlateError as error:
        fail(error)
    out.print(f"wrote world to {out_dir}: {summary['passages']} passages, questions per split and hop "
              f"{summary['questions']}")


@app.command("search")
def search(
    queries: list[str] = typer.Argument(None, help="Queries to run (or use --queries-file)."),
    corpus: Path = typer.Option(..., help="Corpus jsonl ({id, contents})."),
    index: Path | None = typer.Option(None, help="BM25 index directory: loaded if present, else built and saved."),
    k: int = typer.Option(3, "--k", min=1, help="Passages per query."),
    queries_file: Path | None = typer.Option(None, help="A file with one query per line."),
    as_json: bool = typer.Option(False, "--json", help="One JSON line per query."),
) -> None:
    """Search a corpus with BM25."""
    from slate.retrieval.bm25 import Bm25Retriever

    try:
        all_queries = list(queries or [])
        if queries_file is not None:
            if not queries_file.is_file():
                raise SlateError(f"{queries_file}: no such file (--queries-file takes one query per line).")
            all_queries += [line.strip() for line in queries_file.read_text().splitlines() if line.strip()]
        if not all_queries:
            raise SlateError("no queries: pass them as arguments or with --queries-file FILE.")
        retriever = Bm25Retriever.from_corpus_cached(corpus, index)
        results = retriever.search(all_queries, k)
    except SlateError as error:
        fail(error)
    for query, hits in zip(all_queries, results, strict=True):
        if as_json:
            out.print_json(json.dumps({"query": query, "hits": [{"id": h.id, "title": h.title, "score": h.score}
                                                                for h in hits]}), indent=None)
            continue
        table = Table(title=f"[bold]{query}", show_lines=False)
        for column in ("rank", "id", "score", "title", "text"):
            table.add_column(column)
        for rank, hit in enumerate(hits, start=1):
            table.add_row(str(rank), hit.id, f"{hit.score:.2f}", hit.title, hit.text[:90])
        out.print(table)


def main() -> None:
    setup_logging()
    app()


if __name__ == "__main__":
    sys.exit(main())

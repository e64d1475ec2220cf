"""What every command shares: the two consoles, logging, the one-line error exit, the world, progress reports.

Commands print through ``out`` (results, stdout) and ``console`` (status, stderr); everything below ``cli/`` logs,
and ``setup_logging`` routes those records to ``console``. ``progress()`` is a rich bar on a terminal and plain
lines otherwise: a run in the background (``slate sft … > sft.log 2>&1``) still says how far it is.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from slate.config import RunConfig
from slate.errors import ConfigError

console = Console(stderr=True)
out = Console()


def setup_logging(verbose: bool = False) -> None:
    """INFO records of every ``slate`` module to ``console`` (DEBUG with ``verbose``); other libraries quieter."""
    import transformers

    transformers.utils.logging.disable_progress_bar()  # our own bars report progress; theirs only clutter
    transformers.utils.logging.set_verbosity_error()
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False)], force=True)
    if not verbose:
        logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets its own logger to DEBUG on index loads
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request to a rollout or judge server


def fail(error: Exception) -> None:
    """Print a SlateError as one red line and exit 1: bad input never shows a traceback."""
    # the message is plain text: brackets in it (a list of tags, a file:line) must not be read as markup
    console.print(Text.assemble(("error: ", "bold red"), str(error)), soft_wrap=True)
    raise typer.Exit(code=1)


def resolve_world(config: RunConfig, world: Path | None, may_build: bool = True) -> Path:
    """``--world`` wins over ``world.dir``; a missing world is built when the config allows it and ``may_build``."""
    from slate.world.build import build_world, write_world

    world_dir = Path(world) if world is not None else Path(config.world.dir)
    if not (world_dir / "corpus.jsonl").is_file():
        if world is not None or not config.world.build_if_missing or not may_build:
            other = "" if may_build else ", or give the retriever a corpus of its own (retrieval.corpus=FILE)"
            raise ConfigError(f"{world_dir}: no world here (no corpus.jsonl). Build one with "
                              f"`slate world build --out {world_dir}`{other}.")
        console.print(f"building the world at {world_dir} (seed {config.world.seed}, size {config.world.size})")
        write_world(build_world(config.world.seed, config.world.size, config.world.max_hops), world_dir,
                    config.world.seed, config.world.size, config.world.max_hops)
    return world_dir


class PlainProgress:
    """rich's ``Progress`` interface (``add_task``, ``update``, a context manager) as plain lines for a console that
    is not a terminal: the first update, then one every ``every_s`` seconds, and the last, each with the rate and
    the time left: ``SFT seed 0 120/4500 | loss 1.234 | 2.1/s | ETA 34 min 50 s``."""

    def __init__(self, target: Console, every_s: float = 30.0) -> None:
        self.console = target
        self.every_s = every_s
        self.tasks: list[dict[str, Any]] = []

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        self.tasks.append({"description": description, "total": total, "completed": 0, "start": time.monotonic(),
                           "printed_at": None, **fields})
        return len(self.tasks) - 1

    def update(self, task_id: int, completed: float | None = None, total: float | None = None,
               **fields: Any) -> None:
        task = self.tasks[task_id]
        if total is not None:
            task["total"] = total
        if completed is not None:
            task["completed"] = completed
        task.update(fields)
        now = time.monotonic()
        finished = task["total"] is not None and task["completed"] >= task["total"]
        if task["printed_at"] is None or finished or now - task["printed_at"] >= self.every_s:
            task["printed_at"] = now
            self.console.print(progress_line(task["description"], task["completed"], task["total"],
                                             now - task["start"], task.get("info", "")),
                               markup=False, highlight=False, soft_wrap=True)


def progress_line(description: str, completed: float, total: float | None, elapsed_s: float, info: str = "") -> str:
    """One plain progress line: what, how far, the extra info, the rate and the time left."""
    parts = [f"{description} {completed:g}/{total:g}" if total else f"{description} {completed:g}"]
    if info:
        parts.append(info)
    rate = completed / elapsed_s if elapsed_s > 0 else 0.0
    parts.append(f"{rate:.2f}/s")
    if total and rate > 0:
        parts.append(f"ETA {duration(max(0.0, (total - completed) / rate))}")
    return " | ".join(parts)


def duration(seconds: float) -> str:
    """``2 h 05 min``, ``34 min 50 s``, ``12 s``."""
    seconds = math.ceil(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def progress(every_s: float = 30.0) -> Any:
    """A progress display for a long phase: rich's bar on a terminal, ``PlainProgress`` lines otherwise."""
    if not console.is_terminal:
        return PlainProgress(console, every_s)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)


def print_eval_table(result: dict, title: str) -> None:
    table = Table(title=title)
    for column in ("split", "n", "EM", "F1", "valid", "searches"):
        table.add_column(column, justify="right")
    rows = [(f"{hops}-hop", m) for hops, m in result.get("by_hops", {}).items()]
    rows += list(result.get("by_dataset", {}).items())
    if "macro" in result:
        rows.append(("macro", {"n": "", **result["macro"]}))
    rows.append(("overall", result))
    for name, m in rows:
        table.add_row(name, str(m["n"]), f"{m['em']:.3f}", f"{m['f1']:.3f}", f"{m['valid_rate']:.3f}",
                      f"{m['searches']:.2f}")
    out.print(table)

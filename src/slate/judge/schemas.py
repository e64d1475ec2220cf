"""The JSON shapes of judge replies and how each server dialect asks for them (``judge.structured_output``).

Three replies: one verdict (``VERDICT_SCHEMA``: item mode), one score per candidate (``group_schema``: group mode),
one score per candidate and dimension (``step_group_schema``: group_steps mode). ``response_format`` wraps a schema
in the body a server expects:

- ``json_schema``: OpenAI / vLLM / SGLang, ``{"type": "json_schema", "json_schema": {"name", "strict", "schema"}}``.
- ``json_object``: llama.cpp server, ``{"type": "json_object", "schema": {...}}`` (grammar-constrained); there the
  reasoning is also capped at ``judge.max_reasoning_chars`` characters (default ``LLAMA_CPP_REASONING_CHARS``), so
  that the grammar closes the string and reaches the score before ``max_tokens`` (a small model otherwise reasons
  until it is cut off, unparsable), and a group's candidates are fixed in order (``fixed_candidate_order``).
- ``vllm``: the ``json_schema`` body around the ``json_object`` dialect's schema (reasoning capped, candidates in
  order), which vLLM's grammar backends (xgrammar, guidance) enforce. vLLM reads ``json_object`` as "any JSON" and
  drops its schema; with plain ``json_schema`` SmolLM2-135M reasons until ``max_tokens`` cuts it off (8 of 8
  replies unparsable on vLLM 0.32). OpenAI's strict mode refuses ``maxLength`` and ``prefixItems``: there, use
  ``json_schema``.
"""

from __future__ import annotations

from typing import Any, Literal

from slate.judge.types import SCORES

StructuredOutput = Literal["json_schema", "json_object", "vllm"]
LLAMA_CPP_REASONING_CHARS = 400

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"reasoning": {"type": "string"}, "score": {"type": "integer", "enum": [-1, 0, 1]}},
    "required": ["reasoning", "score"],
    "additionalProperties": False,
}


def _candidate_entries(k: int) -> dict[str, Any]:
    """A list of exactly ``k`` entries ``{candidate, reasoning, score}``, candidates numbered 1..k."""
    entry = {"type": "object",
             "properties": {"candidate": {"type": "integer", "enum": list(range(1, k + 1))},
                            "reasoning": {"type": "string"}, "score": {"type": "integer", "enum": list(SCORES)}},
             "required": ["candidate", "reasoning", "score"], "additionalProperties": False}
    return {"type": "array", "items": entry, "minItems": k, "maxItems": k}


def group_schema(k: int) -> dict[str, Any]:
    """JSON schema of a group reply with exactly ``k`` entries, candidates numbered 1..k."""
    return {"type": "object", "properties": {"scores": _candidate_entries(k)}, "required": ["scores"],
            "additionalProperties": False}


def step_group_schema(k: int, dimensions: tuple[str, ...]) -> dict[str, Any]:
    """JSON schema of a step-group reply: one list of exactly ``k`` entries per dimension, candidates 1..k."""
    return {"type": "object", "properties": {dimension: _candidate_entries(k) for dimension in dimensions},
            "required": list(dimensions), "additionalProperties": False}


def response_format(dialect: StructuredOutput | None, schema: dict[str, Any], name: str,
                    reasoning_chars: int = LLAMA_CPP_REASONING_CHARS) -> dict[str, Any] | None:
    """The ``response_format`` body asking for replies of ``schema`` in ``dialect`` (None: free text, no body)."""
    if dialect is None:
        return None
    if dialect == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}
    if dialect == "vllm":
        return {"type": "json_schema", "json_schema": {"name": name, "strict": True,
                                                       "schema": llama_cpp_schema(schema, reasoning_chars)}}
    return {"type": "json_object", "schema": llama_cpp_schema(schema, reasoning_chars)}


def llama_cpp_schema(schema: dict[str, Any], reasoning_chars: int = LLAMA_CPP_REASONING_CHARS) -> dict[str, Any]:
    """``schema`` as the ``json_object`` dialect sends it: reasoning capped (``capped_reasoning``) and every list of
    candidate entries fixed in order (``fixed_candidate_order``)."""
    return fixed_candidate_order(capped_reasoning(schema, reasoning_chars))


def fixed_candidate_order(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every array of ``{"candidate": enum 1..k, ...}`` entries turned into a tuple
    (``prefixItems``) whose i-th entry must name candidate i.

    With an enum the grammar lets a small judge write one number twice and skip another, which fails the whole
    group reply (SmolLM2-135M under llama.cpp's grammar did so in 10 of 10 packed step-group replies of an audit);
    with the order fixed it can only give each candidate its score. The parser checks the numbers all the same."""
    def fix(node: Any) -> Any:
        if isinstance(node, list):
            return [fix(value) for value in node]
        if not isinstance(node, dict):
            return node
        node = {key: fix(value) for key, value in node.items()}
        entry = node.get("items")
        candidate = entry.get("properties", {}).get("candidate") if isinstance(entry, dict) else None
        if node.get("type") == "array" and isinstance(candidate, dict) and "enum" in candidate:
            numbers = candidate["enum"]
            node = {"type": "array", "items": False, "minItems": len(numbers), "maxItems": len(numbers),
                    "prefixItems": [{**entry, "properties": {**entry["properties"],
                                                             "candidate": {"type": "integer", "const": number}}}
                                    for number in numbers]}
        return node
    return fix(schema)


def capped_reasoning(schema: dict[str, Any], chars: int = LLAMA_CPP_REASONING_CHARS) -> dict[str, Any]:
    """``schema`` with every ``reasoning`` string property limited to ``chars`` characters (``judge.
    max_reasoning_chars``). A small judge that falls into a repetition ("1, 1, 1, …") writes the whole cap, at up to
    one token per character, so the cap must leave room under ``max_new_tokens`` for the score."""
    def cap(node: Any) -> Any:
        if isinstance(node, dict):
            capped = {key: cap(value) for key, value in node.items()}
            if isinstance(capped.get("properties"), dict) and "reasoning" in capped["properties"]:
                capped["properties"]["reasoning"] = {"type": "string", "maxLength": chars}
            return capped
        if isinstance(node, list):
            return [cap(value) for value in node]
        return node
    return cap(schema)

"""The instruction that teaches the step format, and the prompt builder. The template is a config value."""

from __future__ import annotations

from slate.errors import ConfigError

DEFAULT_TEMPLATE = (
    "Answer the question by reasoning step by step and searching when you need facts. "
    "In every step, first reason inside <think> and </think>. Then either search the knowledge base by writing "
    "<search> query </search>, whose results come back inside <information> and </information>, or, once you "
    "know the answer, write it inside <answer> and </answer> with no explanation, for example "
    "<answer> Paris </answer>. Question: {question}\n"
)


def build_prompt(question: str, template: str = DEFAULT_TEMPLATE) -> str:
    """Fill the template; it must contain ``{question}`` exactly once."""
    if template.count("{question}") != 1:
        raise ConfigError("rollout.prompt_template must contain the placeholder {question} exactly once; "
                          f"got {template.count('{question}')}.")
    return template.replace("{question}", question.strip())

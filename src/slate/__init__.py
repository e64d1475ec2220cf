"""slate-rl: train LLMs to reason with a search engine by reinforcement learning (SLATE, Search-R1, StepSearch)."""

__version__ = "0.1.0"

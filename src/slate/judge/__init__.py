"""LLM judges for SLATE's step-level process rewards: the Judge protocol, backends (oracle, openai, hf), prompts,
reply parsing, a reply cache and the oracle audit. Heavy backends (openai, torch) are imported from their modules."""

from slate.config import JudgeConfig
from slate.judge.factory import build_judge
from slate.judge.failures import check_failures
from slate.judge.oracle import OracleJudge
from slate.judge.types import Judge, JudgeItem, JudgeVerdict

__all__ = ["Judge", "JudgeConfig", "JudgeItem", "JudgeVerdict", "OracleJudge", "build_judge", "check_failures"]

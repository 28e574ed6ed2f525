"""Small GGUF files written with the gguf library, for the tests that read model headers."""

from __future__ import annotations

import numpy as np


def finish_gguf(w, *, vocab: int = 100, hidden: int = 64, tokens: bool = True) -> None:
    """Give a GGUFWriter whose metadata is set a vocabulary (``vocab`` tokens, unless ``tokens`` is false) and a
    16-bit token embedding of vocab x hidden, then write and close the file."""
    if tokens:
        w.add_token_list([f"t{i}" for i in range(vocab)])
    w.add_tensor("token_embd.weight", np.zeros((vocab, hidden), np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def decoder_header(w, *, layers: int, ff, kv, hidden: int = 64, heads: int = 4, key_length: int | None = None,
                   context: int = 4096, ssm: dict | None = None) -> None:
    """The llama.cpp metadata of a small decoder: layer count, widths (``ff`` and ``kv`` a number or a per-layer list),
    key / value length where given, and the ``{arch}.ssm.*`` keys of ``ssm``."""
    w.add_block_count(layers)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    if key_length:
        w.add_key_length(key_length)
        w.add_value_length(key_length)
    w.add_context_length(context)
    for key, value in (ssm or {}).items():
        w.add_uint32(f"{w.arch}.ssm.{key}", value)

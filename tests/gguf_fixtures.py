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

"""Read a model's architecture and exact weight size from the files people download.

Three kinds of file, headers only — tensor data is never read:

- a Hugging Face ``config.json`` (architecture only);
- a ``.gguf`` file (llama.cpp): the architecture from its metadata keys (``{arch}.block_count``,
  ``{arch}.embedding_length`` …), the exact weights bytes as the sum of every tensor's stored size,
  the mix of tensor types, and ``general.file_type`` as a quantization key (``q4_k_m``);
- a ``.safetensors`` file or a sharded model's ``model.safetensors.index.json``: each file starts
  with an 8-byte little-endian header length and a JSON header listing every tensor's dtype, shape
  and byte range, which gives exact parameter counts and bytes; the architecture comes from the
  ``config.json`` beside it.

:func:`read_model_file` returns one dict shape for all three, whose ``config`` is a config.json-style
object that :func:`vramplan.architecture.from_hf_config` reads. A file that cannot be read raises
:class:`RequestError` with one message naming the file.

Every file is hostile input, so sizes and counts are checked before anything is read or built
from them: only regular files (a link to ``/dev/zero`` would be read forever), JSON of at most
:data:`MAX_JSON_BYTES`, nesting and integer digits capped; a GGUF header is walked once with
every string length, array count and tensor dimension checked against the file's size and the
limits of a remote header by the one header walker (:func:`vramplan.remote.parse_gguf_header`) before the gguf library parses it (it trusts the counts: an 84-byte file
claiming an array of 2^62 bytes made it grow without end); a safetensors header is limited in
tensors and dimensions, and each tensor's shape must account for its byte range, as the format
requires.
"""

from __future__ import annotations

import json
import math
import stat
import struct
from collections import Counter
from pathlib import Path

from . import families
from .errors import RequestError
from .keptmodules import HF_QUANT_CONFIG, checkpoint_config, checkpoint_format
from .remote import parse_gguf_header

#: Largest JSON header accepted in a safetensors file (the format caps it at 100 MB).
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
#: Largest config.json / index file read (real ones are a few KB; a sharded index a few MB).
MAX_JSON_BYTES = 16 * 1024 * 1024
#: Digits of one integer in a JSON file (a model's largest count, its byte size, has 13).
MAX_JSON_INT_DIGITS = 30
#: Tensors in one safetensors file and dimensions of one tensor (real: a few thousand; at most 5).
MAX_SAFETENSORS_TENSORS = 1_000_000
MAX_TENSOR_DIMS = 16
#: Shards a model.safetensors.index.json may list (real: up to a few hundred).
MAX_SHARDS = 100_000

#: Bytes per element of each safetensors dtype (the format's spec).
SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
}

#: safetensors dtype of the bulk of the weights -> quantization key (catalogs/quantization).
_DTYPE_QUANT = {"BF16": "bf16", "F16": "fp16", "F32": "fp32", "F8_E4M3": "fp8", "F8_E5M2": "fp8"}


#: llama.cpp architecture names -> Hugging Face ``model_type`` (where they differ).
_GGUF_ARCH_MODEL_TYPE = {
    "qwen3moe": "qwen3_moe", "qwen2moe": "qwen2_moe", "gemma3": "gemma3_text", "deepseek2": "deepseek_v3",
    "gpt-oss": "gpt_oss", "command-r": "cohere", "phi2": "phi", "llama4": "llama4_text", "granitemoe": "granitemoe",
    "lfm2moe": "lfm2_moe", "nemotron_h_moe": "nemotron_h", "qwen3next": "qwen3_next", "qwen35": "qwen3_5_text",
    "qwen35moe": "qwen3_5_moe_text", "kimi-linear": "kimi_linear",
}

#: llama.cpp architectures whose attention is MLA (DeepSeek V2 / V3, Kimi K2, and Kimi Linear's MLA layers).
_GGUF_MLA_ARCHS = ("deepseek2", "kimi-linear")

#: ``{arch}.<key>`` metadata -> config.json key (llama.cpp ``LLM_KV_*`` names).
_GGUF_KEYS = {
    "block_count": "num_hidden_layers",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "context_length": "max_position_embeddings",
    "expert_count": "num_local_experts",
    "expert_used_count": "num_experts_per_tok",
    "expert_feed_forward_length": "moe_intermediate_size",
    "expert_shared_count": "n_shared_experts",
    "leading_dense_block_count": "first_k_dense_replace",
    "attention.kv_lora_rank": "kv_lora_rank",
    "attention.q_lora_rank": "q_lora_rank",
    "attention.sliding_window": "sliding_window",
    "vocab_size": "vocab_size",
}


def read_model_file(path: str | Path) -> dict:
    """Read a config.json, .gguf, .safetensors or model.safetensors.index.json (or a folder
    holding one of them) and describe the model. (URLs and Hub names: :func:`vramplan.hub.read_model`.)

    Returns ``{"kind", "config", "params", "weights_bytes", "tensor_types", "quantization",
    "name", "notes"}``: ``config`` is config.json-style; ``params`` and ``weights_bytes`` are
    exact counts from the tensor headers (``None`` for a bare config.json); ``tensor_types``
    counts tensors per stored type (``{"Q4_K": 193, "Q6_K": 33, "F32": 65}``).
    """
    p = Path(path)
    if not p.exists():
        raise RequestError([(str(p), "no such file")])
    if p.is_dir():
        p = _pick_in_folder(p)
    _regular_size(p)
    try:
        with p.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise RequestError([(str(p), f"cannot be read: {exc.strerror or exc}")]) from None
    name = p.name.lower()
    if magic == b"GGUF" or name.endswith(".gguf"):
        return _read_gguf(p)
    if name.endswith(".safetensors"):
        return _read_safetensors(p)
    if name.endswith(".json"):
        data = _read_json(p)
        if isinstance(data, dict) and isinstance(data.get("weight_map"), dict):
            return _read_safetensors_index(p, data)
        if not isinstance(data, dict):
            raise RequestError([(str(p), "is not a config.json object")])
        data = _with_sibling_quant(data, p)
        return _result("config", data, None, None, {}, _quant_from_config(data), _config_name(data, p),
                       ["architecture only: a config.json gives no weight sizes"])
    raise RequestError([(str(p), "is not a model file vramplan reads (config.json, .gguf, .safetensors, "
                                 "model.safetensors.index.json)")])


def _pick_in_folder(folder: Path) -> Path:
    for pattern in ("model.safetensors.index.json", "*.safetensors", "*.gguf", "config.json"):
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    raise RequestError([(str(folder), "holds no config.json, .gguf or .safetensors file")])


def _result(kind, config, params, weights_bytes, tensor_types, quantization, name, notes=()) -> dict:
    return {"kind": kind, "config": config, "params": params, "weights_bytes": weights_bytes,
            "tensor_types": dict(tensor_types), "quantization": quantization, "name": name,
            "notes": list(notes)}


def _regular_size(p: Path) -> int:
    """The size of ``p``, which must be a regular file (not a device, FIFO or socket)."""
    try:
        info = p.stat()
    except OSError as exc:
        raise RequestError([(str(p), f"cannot be read: {exc.strerror or exc}")]) from None
    if not stat.S_ISREG(info.st_mode):
        raise RequestError([(str(p), "is not a regular file (a device, FIFO or socket cannot be a model file)")])
    return info.st_size


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_JSON_INT_DIGITS})")
    return int(text)


def parse_json_text(raw: bytes, shown: str):
    """JSON from a file: integers of at most :data:`MAX_JSON_INT_DIGITS` digits, nesting within
    Python's recursion limit; any failure is a :class:`RequestError` naming ``shown``."""
    try:
        return json.loads(raw.decode("utf-8"), parse_int=_parse_int, parse_constant=_no_constant)
    except RecursionError:
        raise RequestError([(shown, "is not usable JSON (nested too deeply)")]) from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise RequestError([(shown, f"is not valid JSON ({str(exc)[:200]})")]) from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _read_json(p: Path):
    size = _regular_size(p)
    if size > MAX_JSON_BYTES:
        raise RequestError([(str(p), f"is {size:,} bytes; JSON model files are limited to {MAX_JSON_BYTES:,}")])
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise RequestError([(str(p), f"cannot be read: {exc.strerror or exc}")]) from None
    if len(raw) > MAX_JSON_BYTES:
        raise RequestError([(str(p), f"is over {MAX_JSON_BYTES:,} bytes; JSON model files are limited to that")])
    return parse_json_text(raw, str(p))


def display_name(config: dict) -> str | None:
    """The model's name from a config.json: the last part of ``_name_or_path`` (a Hub id ``org/name`` or the
    folder it was saved from), ``None`` when the config does not say (the caller names the file instead)."""
    name = config.get("_name_or_path") if isinstance(config, dict) else None
    if isinstance(name, str) and name.strip().rstrip("/\\"):
        return name.strip().rstrip("/\\").replace("\\", "/").split("/")[-1]
    return None


def _config_name(config: dict, p: Path) -> str:
    return display_name(config) or p.parent.name or p.stem


# -- GGUF ---------------------------------------------------------------------------------------

class _HeaderFile:
    """A local file read as :func:`vramplan.remote.parse_gguf_header` reads a remote one; a read
    past the end is refused, naming where the header stopped."""

    def __init__(self, fh, size: int, where: str):
        self._fh, self._size, self._where = fh, size, where

    @property
    def position(self) -> int:
        return self._fh.tell()

    def read(self, n: int) -> bytes:
        data = self._fh.read(n)
        if len(data) < n:
            raise RequestError([(self._where, f"is not a usable GGUF file: the header ends early "
                                              f"(at byte {self.position:,} of {self._size:,})")])
        return data


def check_gguf_header(p: Path) -> tuple[dict, list[tuple], int | None]:
    """Walk a local GGUF header with the one header walker (:func:`vramplan.remote.parse_gguf_header`:
    every length and count checked against the file's size and the limits of a remote header)
    before the gguf library parses it; returns what the walk read."""
    size = _regular_size(p)
    with p.open("rb") as fh:
        return parse_gguf_header(_HeaderFile(fh, size, str(p)), str(p), size)


def _read_gguf(p: Path) -> dict:
    try:
        from gguf import GGUFReader
    except ImportError:  # pragma: no cover - gguf is a dependency
        raise RequestError([(str(p), "reading GGUF files needs the 'gguf' package")]) from None
    try:
        check_gguf_header(p)
    except OSError as exc:
        raise RequestError([(str(p), f"cannot be read: {exc.strerror or exc}")]) from None
    try:
        reader = GGUFReader(str(p), "r")
        meta = {name: _field_value(field) for name, field in reader.fields.items()
                if not name.startswith("tokenizer.ggml.") or name == "tokenizer.ggml.model"}
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        n_tokens = len(tokens.data) if tokens is not None else None
        tensors = [(t.name, t.tensor_type.name, [int(d) for d in t.shape], int(t.n_elements), int(t.n_bytes))
                   for t in reader.tensors]
    except RequestError:
        raise
    except Exception as exc:  # the reader raises ValueError, struct/IndexError… on a damaged file
        raise RequestError([(str(p), f"is not a readable GGUF file ({type(exc).__name__}: {exc})")]) from None
    return gguf_description(meta, tensors, n_tokens, where=str(p), stem=p.stem)


def gguf_description(meta: dict, tensors: list, n_tokens: int | None, *, where: str, stem: str) -> dict:
    """The model a GGUF header describes (metadata values and ``(name, type, shape, n_elements,
    n_bytes)`` per tensor), read from a local file or over HTTP (:mod:`vramplan.remote`)."""
    if not tensors:
        raise RequestError([(where, "is a GGUF file with no tensors (a vocabulary-only file?)")])

    arch = str(meta.get("general.architecture") or "")
    if not arch:
        raise RequestError([(where, "has no general.architecture metadata")])
    config: dict = {"model_type": _GGUF_ARCH_MODEL_TYPE.get(arch, arch), "gguf_architecture": arch}
    for suffix, key in _GGUF_KEYS.items():
        value = meta.get(f"{arch}.{suffix}")
        if isinstance(value, list):  # per-layer arrays (e.g. head counts that vary by layer)
            numbers = [v for v in value if _is_number(v)]
            value = max(numbers) if numbers and len(numbers) == len(value) else (value or None)
        if value is not None:  # a number as the integer it counts; anything else is left for the key check to name
            config[key] = int(value) if _is_number(value) else value
    by_name = {name: shape for name, _t, shape, _n, _b in tensors}
    if "vocab_size" not in config:
        if "token_embd.weight" in by_name and len(by_name["token_embd.weight"]) == 2:
            config["vocab_size"] = by_name["token_embd.weight"][1]  # GGUF shapes are [ne0=hidden, ne1=vocab]
        elif n_tokens:
            config["vocab_size"] = n_tokens
    config["tie_word_embeddings"] = "output.weight" not in by_name
    if arch in _GGUF_MLA_ARCHS and "kv_lora_rank" in config:
        # MLA: a head's key is nope + rope. llama.cpp's converters since its MLA cache (conversion/deepseek.py
        # DeepseekModel.set_gguf_parameters, and Kimi Linear's) write the cached latent's widths under key_length /
        # value_length (kv_lora_rank + rope, kv_lora_rank) and a head's under key_length_mla / value_length_mla;
        # older files have only the plain keys, which then are a head's
        rope = meta.get(f"{arch}.rope.dimension_count")
        key_len = meta.get(f"{arch}.attention.key_length_mla", meta.get(f"{arch}.attention.key_length"))
        value_len = meta.get(f"{arch}.attention.value_length_mla", meta.get(f"{arch}.attention.value_length"))
        if _is_number(rope) and _is_number(key_len) and rope and key_len:
            config["qk_rope_head_dim"] = int(rope)
            config["qk_nope_head_dim"] = int(key_len) - int(rope)
            config["v_head_dim"] = int(value_len) if _is_number(value_len) and value_len else int(key_len) - int(rope)
            config.pop("head_dim", None)
    if "moe_intermediate_size" in config and "intermediate_size" not in config:
        config["intermediate_size"] = config["moe_intermediate_size"]
    config = families.from_gguf(arch, meta, config)  # hybrid families' recurrent geometry
    mixer = next((k for k in meta if k.startswith((f"{arch}.ssm.", f"{arch}.shortconv.", f"{arch}.wkv."))), None)
    if mixer and config["model_type"] not in families.READERS:
        # Mamba / RWKV / other recurrent layers llama.cpp describes but vramplan does not read: counted as
        # attention they would get a KV cache, parameters and a speed they do not have
        raise RequestError([(where, f"is a GGUF of architecture '{arch}', whose recurrent layers ({mixer}) vramplan does "
                                    f"not read (it reads them for {', '.join(sorted(families.READERS))})")])

    types = Counter(t for _n, t, _s, _e, _b in tensors)
    params = sum(n for *_x, n, _b in tensors)
    weights_bytes = sum(b for *_x, b in tensors)
    quant = _gguf_quantization(meta.get("general.file_type"), tensors)
    name = str(meta.get("general.name") or stem)
    notes = [f"GGUF architecture '{arch}'"]
    return _result("gguf", config, params, weights_bytes, types, quant, name, notes)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _field_value(field):
    """A GGUF metadata value as a Python scalar, string or list."""
    from gguf import GGUFValueType
    if not field.types:
        return None
    if field.types[0] == GGUFValueType.ARRAY:
        if len(field.types) > 1 and field.types[-1] == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if field.types[0] == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
    return field.parts[field.data[0]].tolist()[0]


def _gguf_quantization(file_type, tensors) -> str | None:
    from gguf import LlamaFileType
    if file_type is not None:
        try:
            ft = LlamaFileType(int(file_type))
        except (ValueError, TypeError, OverflowError):
            ft = None
        if ft is not None and ft != LlamaFileType.GUESSED:
            special = {"ALL_F32": "fp32", "MOSTLY_F16": "fp16", "MOSTLY_BF16": "bf16", "MOSTLY_MXFP4_MOE": "mxfp4"}
            return special.get(ft.name, ft.name.removeprefix("MOSTLY_").lower())
    # no file type: name the type that holds most of the bytes
    by_bytes: Counter = Counter()
    for _n, t, _s, _e, b in tensors:
        by_bytes[t] += b
    top = by_bytes.most_common(1)[0][0]
    return {"F32": "fp32", "F16": "fp16", "BF16": "bf16", "MXFP4": "mxfp4"}.get(top, top.lower())


# -- safetensors --------------------------------------------------------------------------------

def _safetensors_header(p: Path) -> dict:
    """The JSON header of a safetensors file (8-byte little-endian length, then JSON)."""
    size = _regular_size(p)
    try:
        with p.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise RequestError([(str(p), "is too short to be a safetensors file")])
            (n,) = struct.unpack("<Q", raw)
            if n == 0 or n > MAX_SAFETENSORS_HEADER or n > size - 8:
                raise RequestError([(str(p), f"is not a safetensors file (header length {n} does not fit "
                                             f"a {size}-byte file; limit {MAX_SAFETENSORS_HEADER:,})")])
            raw = fh.read(n)
    except OSError as exc:
        raise RequestError([(str(p), f"is not a safetensors file (unreadable header: {exc})")]) from None
    return check_safetensors_header(parse_json_text(raw, str(p)), str(p), size - 8 - n)


def check_safetensors_header(header, where: str, data_size: int | None = None, shard: str = "") -> dict:
    """A parsed safetensors header, checked (a JSON object of at most
    :data:`MAX_SAFETENSORS_TENSORS` entries, each sound by :func:`tensor_problem`) and returned
    without its ``__metadata__``: one check for a local file, a Hub shard's header fetched by range
    or remembered in vramplan's cache. ``shard`` names the shard within ``where`` (a Hub model)."""
    lead = f"{shard} " if shard else ""
    if not isinstance(header, dict):
        raise RequestError([(where, f"{lead}is not a safetensors file (header is not a JSON object)")])
    if len(header) > MAX_SAFETENSORS_TENSORS:
        raise RequestError([(where, f"{lead}lists {len(header):,} tensors (limit {MAX_SAFETENSORS_TENSORS:,})")])
    for tname, info in header.items():
        problem = tensor_problem(tname, info, data_size)
        if problem:
            raise RequestError([(where, lead + problem)])
    return {k: v for k, v in header.items() if k != "__metadata__"}


def tensor_problem(tname: str, info, data_size: int | None = None) -> str | None:
    """What is wrong with one safetensors header entry, or None (``__metadata__`` is never wrong):
    its fields' types, at most :data:`MAX_TENSOR_DIMS` dimensions, a byte range inside the data
    section (when its size is known) that the shape fills exactly, as the format requires."""
    if tname == "__metadata__":
        return None
    name = repr(str(tname)[:80])
    if isinstance(info, dict) and isinstance(info.get("shape"), list) and len(info["shape"]) > MAX_TENSOR_DIMS:
        return f"tensor {name} has {len(info['shape']):,} dimensions (limit {MAX_TENSOR_DIMS})"
    ok = (isinstance(info, dict) and isinstance(info.get("dtype"), str) and isinstance(info.get("shape"), list)
          and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2
          and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in info["shape"] + info["data_offsets"]))
    if not ok:
        return f"has a malformed entry for tensor {name}"
    start, end = info["data_offsets"]
    if end < start or (data_size is not None and end > data_size):
        return f"is truncated or damaged: tensor {name} ends at byte {end} of a {data_size}-byte data section"
    elements = _elements(info["shape"], end - start)
    width = SAFETENSORS_DTYPE_BYTES.get(info["dtype"])
    if elements is None or (width is not None and elements * width != end - start):
        return f"is damaged: tensor {name} of shape {_short_shape(info['shape'])} does not fill its {end - start:,} bytes"
    return None


def _elements(shape: list[int], nbytes: int) -> int | None:
    """The element count of ``shape``, or None once it passes what ``nbytes`` bytes could hold at
    8 sub-byte elements per byte (stops before building a 5,400-digit product of 300 dimensions)."""
    elements = 1
    for dim in shape:
        elements *= dim
        if elements > 8 * nbytes and nbytes and dim:
            return None
    return elements


def _short_shape(shape: list[int]) -> str:
    text = str(shape)
    return text if len(text) <= 60 else text[:57] + "...]"


def _tally(headers: list[dict]) -> tuple[int, int, Counter, Counter]:
    params = nbytes = 0
    types: Counter = Counter()
    type_bytes: Counter = Counter()
    for header in headers:
        for tname, info in header.items():
            if tname == "__metadata__":
                continue
            start, end = info["data_offsets"]
            params += math.prod(info["shape"])
            nbytes += end - start
            types[info["dtype"]] += 1
            type_bytes[info["dtype"]] += end - start
    return params, nbytes, types, type_bytes


def _sibling_config(p: Path) -> tuple[dict, list[str]]:
    cfg_path = p.parent / "config.json"
    if not cfg_path.exists():
        return {}, [f"no config.json beside {p.name}: the architecture is unknown; put the model's "
                    "config.json in the same folder"]
    data = _read_json(cfg_path)
    if not isinstance(data, dict):
        raise RequestError([(str(cfg_path), "is not a config.json object")])
    return _with_sibling_quant(data, p), []


def _with_sibling_quant(config: dict, p: Path) -> dict:
    """config.json with the hf_quant_config.json beside ``p``, where config.json has no quantization_config."""
    quant_path = p.parent / "hf_quant_config.json"
    if isinstance(config.get("quantization_config"), dict) or not quant_path.exists():
        return config
    return with_hf_quant_config(config, _read_json(quant_path), str(quant_path))


def with_hf_quant_config(config: dict, data, shown: str) -> dict:
    """config.json with ModelOpt's hf_quant_config.json beside it (``{"producer": ..., "quantization": {"quant_algo",
    "kv_cache_quant_algo", "exclude_modules"}}``), read where config.json has no ``quantization_config`` as vLLM's
    get_quant_config does; it travels under :data:`keptmodules.HF_QUANT_CONFIG`."""
    if not isinstance(data, dict):
        raise RequestError([(shown, "is not a JSON object")])
    if not isinstance(data.get("quantization"), dict):
        raise RequestError([(f"{shown}.quantization", "must be an object (quant_algo, exclude_modules)")])
    return {**config, HF_QUANT_CONFIG: data}


def _safetensors_quant(config: dict, type_bytes: Counter) -> str | None:
    q = _quant_from_config(config)
    if q:
        return q
    if not type_bytes:
        return None
    return _DTYPE_QUANT.get(type_bytes.most_common(1)[0][0])


def _quant_from_config(config: dict) -> str | None:
    """The quantization key of the checkpoint's ``quantization_config`` (keptmodules.QUANT_METHODS), or None."""
    qc = checkpoint_config(config)
    return checkpoint_format(qc) if qc is not None else None


def _read_safetensors(p: Path) -> dict:
    header = _safetensors_header(p)
    params, nbytes, types, type_bytes = _tally([header])
    config, notes = _sibling_config(p)
    notes += _packed_note(types, config)
    name = _config_name(config, p) if config else p.stem
    return _result("safetensors", config, params, nbytes, types, _safetensors_quant(config, type_bytes), name, notes)


def _read_safetensors_index(p: Path, index: dict) -> dict:
    names = list(index["weight_map"].values())
    if not names or not all(isinstance(s, str) and s and "/" not in s and "\\" not in s and s not in (".", "..")
                            for s in names):
        raise RequestError([(str(p), "has an empty or malformed weight_map (shards must be file names beside it)")])
    shards = sorted(set(names))
    if len(shards) > MAX_SHARDS:
        raise RequestError([(str(p), f"lists {len(shards):,} shards (limit {MAX_SHARDS:,})")])
    present = [p.parent / s for s in shards if (p.parent / s).exists()]
    config, notes = _sibling_config(p)
    name = _config_name(config, p) if config else p.parent.name
    if len(present) == len(shards):
        params, nbytes, types, type_bytes = _tally([_safetensors_header(s) for s in present])
        notes += _packed_note(types, config)
        return _result("safetensors", config, params, nbytes, types, _safetensors_quant(config, type_bytes),
                       name, notes)
    metadata = index.get("metadata")
    total = metadata.get("total_size") if isinstance(metadata, dict) else None
    if not isinstance(total, int) or isinstance(total, bool) or total <= 0:
        raise RequestError([(str(p), f"{len(shards) - len(present)} of {len(shards)} shards are missing and "
                                     "the index has no metadata.total_size")])
    notes.append(f"{len(shards) - len(present)} of {len(shards)} shard files are not here: weights bytes "
                 "come from the index's metadata.total_size; parameter count and dtypes are unknown")
    return _result("safetensors", config, None, total, {}, _quant_from_config(config), name, notes)


def _packed_note(types: Counter, config: dict) -> list[str]:
    # DeepSeek V4's FP4 experts (expert_dtype "fp4") are stored as I8 pairs of E2M1 values (inference/model.py)
    fp4_experts = isinstance(config, dict) and str(config.get("expert_dtype") or "").lower() == "fp4"
    if _quant_from_config(config) in ("awq", "gptq", "mxfp4") or fp4_experts or types.get("I32") or types.get("U8"):
        return ["some tensors are packed (several weights per stored element): params counts stored "
                "elements, not the model's logical parameters"]
    return []

"""Reading model files: each test writes its own tiny file and checks exact sizes by hand."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType
from safetensors.numpy import save_file

from vramplan.architecture import from_hf_config
from vramplan.errors import RequestError
from vramplan.modelfiles import read_model_file

HIDDEN, LAYERS, HEADS, KV, FF, VOCAB = 64, 2, 4, 2, 128, 100


def _write_tiny_gguf(path, *, tie=True, file_type=LlamaFileType.MOSTLY_Q8_0):
    w = GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_block_count(LAYERS)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV)
    w.add_context_length(256)
    w.add_file_type(file_type)
    w.add_token_list([f"t{i}" for i in range(VOCAB)])
    # token_embd: numpy shape (vocab, hidden) -> GGUF shape [hidden, vocab]
    w.add_tensor("token_embd.weight", np.zeros((VOCAB, HIDDEN), dtype=np.float16))
    w.add_tensor("blk.0.attn_q.weight", np.zeros((HIDDEN, HIDDEN), dtype=np.float32))
    # a Q8_0 tensor: 64x64 weights = 128 blocks of 32, each 34 bytes (f16 scale + 32 int8)
    q8 = np.zeros((HIDDEN, HIDDEN // 32 * 34), dtype=np.uint8)
    w.add_tensor("blk.0.attn_k.weight", q8, raw_shape=(HIDDEN, HIDDEN // 32 * 34),
                 raw_dtype=GGMLQuantizationType.Q8_0)
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    if not tie:
        w.add_tensor("output.weight", np.zeros((VOCAB, HIDDEN), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_architecture_bytes_and_types(tmp_path):
    path = tmp_path / "tiny.gguf"
    _write_tiny_gguf(path)
    info = read_model_file(path)
    assert info["kind"] == "gguf"
    assert info["name"] == "tiny-llama"
    cfg = info["config"]
    assert cfg["model_type"] == "llama"
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"]) == (LAYERS, HIDDEN, FF)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (HEADS, KV)
    assert cfg["vocab_size"] == VOCAB  # from token_embd's shape
    assert cfg["max_position_embeddings"] == 256
    assert cfg["tie_word_embeddings"] is True  # no output.weight tensor
    # params: 100*64 + 64*64 + 64*64 + 64
    assert info["params"] == 6400 + 4096 + 4096 + 64
    # bytes: f16 embd 12800 + f32 q 16384 + q8_0 k 128 blocks*34 = 4352 + f32 norm 256
    assert info["weights_bytes"] == 12800 + 16384 + 4352 + 256
    assert info["tensor_types"] == {"F16": 1, "F32": 2, "Q8_0": 1}
    assert info["quantization"] == "q8_0"
    arch = from_hf_config(cfg)
    assert arch.head_dim == HIDDEN // HEADS


def test_gguf_untied_output_and_q4_k_m_file_type(tmp_path):
    path = tmp_path / "tiny-untied.gguf"
    _write_tiny_gguf(path, tie=False, file_type=LlamaFileType.MOSTLY_Q4_K_M)
    info = read_model_file(path)
    assert info["config"]["tie_word_embeddings"] is False
    assert info["quantization"] == "q4_k_m"
    assert info["params"] == 6400 + 4096 + 4096 + 64 + 6400


def _write_safetensors(path, tensors):
    save_file(tensors, str(path))


def test_safetensors_header_exact_params_and_bytes(tmp_path):
    path = tmp_path / "model.safetensors"
    _write_safetensors(path, {
        "model.embed_tokens.weight": np.zeros((10, 8), dtype=np.float16),
        "model.layers.0.mlp.up_proj.weight": np.zeros((16, 8), dtype=np.float32),
        "model.norm.weight": np.ones(8, dtype=np.float16),
    })
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 16, "vocab_size": 10, "_name_or_path": "org/tiny"}))
    info = read_model_file(path)
    assert info["kind"] == "safetensors"
    assert info["params"] == 80 + 128 + 8
    assert info["weights_bytes"] == 80 * 2 + 128 * 4 + 8 * 2
    assert info["tensor_types"] == {"F16": 2, "F32": 1}
    assert info["quantization"] == "fp32"  # the dtype holding most bytes
    assert info["config"]["hidden_size"] == 8
    assert info["name"] == "tiny"


def test_safetensors_without_config_says_so(tmp_path):
    path = tmp_path / "lonely.safetensors"
    _write_safetensors(path, {"w": np.zeros((4, 4), dtype=np.float16)})
    info = read_model_file(path)
    assert info["config"] == {}
    assert info["params"] == 16 and info["weights_bytes"] == 32
    assert info["quantization"] == "fp16"
    assert any("no config.json" in n for n in info["notes"])


def test_safetensors_header_read_by_hand_matches_library(tmp_path):
    path = tmp_path / "x.safetensors"
    _write_safetensors(path, {"a": np.zeros((3, 5), dtype=np.float32)})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert header["a"]["shape"] == [3, 5]
    assert read_model_file(path)["weights_bytes"] == 60


def _index(tmp_path, shards, total_size=None):
    weight_map = {f"t{i}": s for i, s in enumerate(shards)}
    index = {"weight_map": weight_map}
    if total_size is not None:
        index["metadata"] = {"total_size": total_size}
    path = tmp_path / "model.safetensors.index.json"
    path.write_text(json.dumps(index))
    return path


def test_index_reads_every_present_shard(tmp_path):
    _write_safetensors(tmp_path / "model-00001-of-00002.safetensors", {"t0": np.zeros((4, 4), dtype=np.float16)})
    _write_safetensors(tmp_path / "model-00002-of-00002.safetensors", {"t1": np.zeros((2, 3), dtype=np.float16)})
    path = _index(tmp_path, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"], 999)
    info = read_model_file(path)
    assert info["params"] == 16 + 6
    assert info["weights_bytes"] == (16 + 6) * 2  # from the headers, not the index's total_size
    assert info["tensor_types"] == {"F16": 2}


def test_index_without_shards_uses_total_size(tmp_path):
    path = _index(tmp_path, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"],
                  16_060_522_496)
    info = read_model_file(path)
    assert info["weights_bytes"] == 16_060_522_496
    assert info["params"] is None
    assert any("total_size" in n for n in info["notes"])


def test_index_without_shards_or_total_size_is_an_error(tmp_path):
    path = _index(tmp_path, ["a.safetensors"])
    with pytest.raises(RequestError, match="model.safetensors.index.json"):
        read_model_file(path)


def test_config_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "qwen2", "hidden_size": 896,
                                "quantization_config": {"quant_method": "awq", "bits": 4}}))
    info = read_model_file(path)
    assert info["kind"] == "config"
    assert info["params"] is None and info["weights_bytes"] is None
    assert info["quantization"] == "awq"


def test_folder_picks_the_weights(tmp_path):
    _write_safetensors(tmp_path / "model.safetensors", {"w": np.zeros((2, 2), dtype=np.float16)})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert read_model_file(tmp_path)["kind"] == "safetensors"


@pytest.mark.parametrize("name, content", [
    ("garbage.gguf", b"GGUF" + b"\x07" * 40),
    ("truncated.gguf", None),
    ("garbage.safetensors", b"\xff" * 64),
    ("short.safetensors", b"\x01\x02"),
    ("config.json", b"{not json"),
    ("weights.bin", b"\x00" * 16),
])
def test_malformed_files_raise_one_clear_error(tmp_path, name, content):
    path = tmp_path / name
    if content is None:  # a real GGUF cut in half
        _write_tiny_gguf(tmp_path / "whole.gguf")
        data = (tmp_path / "whole.gguf").read_bytes()
        path.write_bytes(data[: len(data) // 3])
    else:
        path.write_bytes(content)
    with pytest.raises(RequestError) as exc:
        read_model_file(path)
    assert name in str(exc.value)
    assert "Traceback" not in str(exc.value)


def test_truncated_safetensors_data(tmp_path):
    path = tmp_path / "cut.safetensors"
    _write_safetensors(path, {"w": np.zeros((64, 64), dtype=np.float32)})
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(RequestError, match="truncated"):
        read_model_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(RequestError, match="no such file"):
        read_model_file(tmp_path / "nope.gguf")


# -- hostile files: caps before reading (issue 12, item 9) ------------------------------------------

def _gguf_header(kv: bytes, n_kv: int = 1, n_tensors: int = 0) -> bytes:
    """GGUF v3 (ggml docs/gguf.md): magic, version u32, tensor count u64, key count u64, then key/values."""
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + kv


def _key(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


def test_gguf_array_claiming_2_62_items_is_refused_before_the_reader(tmp_path):
    """84 bytes claiming an array of 2^62 uint8: the gguf reader grew ~75 MB/s until killed."""
    evil = _gguf_header(_key("general.evil") + struct.pack("<IIQ", 9, 0, 2**62))
    path = tmp_path / "evil.gguf"
    path.write_bytes(evil.ljust(84, b"\0"))
    with pytest.raises(RequestError) as err:
        read_model_file(path)
    assert str(err.value) == (f"{path}: is not a usable GGUF file: key general.evil claims an array of "
                              "4,611,686,018,427,387,904 items with 24 bytes left (limit 10,000,000 items)")
    # 84 bytes - (24 header + 20 key + 4 type + 4 item type + 8 count) = 24 left


@pytest.mark.parametrize("kv, n_kv, n_tensors, why", [
    (b"", 10**9, 0, "1,000,000,000 metadata keys (limit 100,000)"),
    (b"", 0, 10**8, "100,000,000 tensors (limit 1,000,000)"),
    (_key("general.name") + struct.pack("<IQ", 8, 2**40), 1, 0, "key general.name claims a string of 1,099,511,627,776 bytes"),
    (_key("a") + struct.pack("<IIQ", 9, 8, 10**6), 1, 0, "key a claims an array of 1,000,000 items"),
    (_key("a") + struct.pack("<I", 99), 1, 0, "key a has unknown value type 99"),
    (_key("t") + struct.pack("<I", 60000), 0, 1, "tensor 0 has 60,000 dimensions (limit 8)"),
])
def test_gguf_header_counts_are_checked_against_the_file(tmp_path, kv, n_kv, n_tensors, why):
    path = tmp_path / "bad.gguf"
    body = _gguf_header(kv, n_kv, n_tensors) if n_tensors == 0 else _gguf_header(kv, 0, n_tensors)
    path.write_bytes(body.ljust(200, b"\0"))
    with pytest.raises(RequestError, match=why.replace("(", r"\(").replace(")", r"\)")):
        read_model_file(path)


def test_the_tiny_gguf_still_passes_the_header_walk(tmp_path):
    from vramplan.modelfiles import check_gguf_header

    _write_tiny_gguf(tmp_path / "tiny.gguf")
    check_gguf_header(tmp_path / "tiny.gguf")  # token list, tensors, every value type it writes


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/urandom"])
def test_a_config_linked_to_a_device_is_refused(tmp_path, target):
    import os

    os.symlink(target, tmp_path / "config.json")
    with pytest.raises(RequestError, match="config.json: is not a regular file"):
        read_model_file(tmp_path / "config.json")
    with pytest.raises(RequestError, match="is not a regular file"):
        read_model_file(tmp_path)  # the folder picks config.json


@pytest.mark.parametrize("content, why", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"hidden_size": ' + "9" * 4401 + "}", "an integer of 4401 digits (at most 30)"),
    ('{"hidden_size": NaN}', "NaN is not a JSON number"),
])
def test_hostile_json_is_one_clear_error(tmp_path, content, why):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(RequestError, match=why.replace("(", r"\(").replace(")", r"\)")):
        read_model_file(path)


def test_oversized_json_is_refused_before_reading(tmp_path, monkeypatch):
    import vramplan.modelfiles as modelfiles

    monkeypatch.setattr(modelfiles, "MAX_JSON_BYTES", 1000)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"x": "y" * 2000}))
    # {"x": "yy...y"}: 7 + 2000 + 2 = 2,009 bytes
    with pytest.raises(RequestError, match="is 2,009 bytes; JSON model files are limited to 1,000"):
        read_model_file(path)


def _raw_safetensors(path, header: dict, data: bytes = b"\0\0"):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize("shape, why", [
    ([10**18] * 300, "has 300 dimensions (limit 16)"),
    ([1] * 60_000, "has 60,000 dimensions (limit 16)"),
    ([10**18] * 16, "does not fill its 2 bytes"),
    ([3], "does not fill its 2 bytes"),  # 3 F16 elements are 6 bytes, not 2
])
def test_safetensors_shapes_must_account_for_their_bytes(tmp_path, shape, why):
    import time

    path = tmp_path / "w.safetensors"
    _raw_safetensors(path, {"w": {"dtype": "F16", "shape": shape, "data_offsets": [0, 2]}})
    t0 = time.perf_counter()
    with pytest.raises(RequestError, match=why.replace("(", r"\(").replace(")", r"\)")):
        read_model_file(path)
    assert time.perf_counter() - t0 < 1  # 60,000 dimensions took 10.8 s


def test_index_shards_must_be_file_names_beside_it(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../../etc/passwd"}}))
    with pytest.raises(RequestError, match="shards must be file names beside it"):
        read_model_file(tmp_path / "model.safetensors.index.json")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": ["a"]}, "metadata": []}))
    with pytest.raises(RequestError, match="malformed weight_map"):
        read_model_file(tmp_path / "model.safetensors.index.json")


def test_gguf_metadata_of_the_wrong_type_is_named_by_the_key_check(tmp_path):
    """A GGUF whose block_count is a string reaches the architecture check as config.num_hidden_layers."""
    w = GGUFWriter(str(tmp_path / "s.gguf"), "llama")
    w.add_string("llama.block_count", "many")
    w.add_embedding_length(HIDDEN)
    w.add_tensor("token_embd.weight", np.zeros((VOCAB, HIDDEN), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    info = read_model_file(tmp_path / "s.gguf")
    assert info["config"]["num_hidden_layers"] == "many"
    with pytest.raises(RequestError, match=r"num_hidden_layers: must be an integer from 1 to 4,096, got 'many'"):
        from_hf_config(info["config"], where="s.gguf")

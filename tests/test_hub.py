"""Hub ids (hf:ORG/NAME[@REV]) and remote GGUF headers, against a Hub cache laid out on disk by the
test and loopback servers that count every byte they send. The CLI runs in a subprocess so that
huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE / HF_ENDPOINT as it does for a user."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter, LlamaFileType
from hub_fixtures import FileServer, lay_out_hub_cache
from safetensors.numpy import save

from vramplan import hub
from vramplan.errors import RequestError
from vramplan.modelfiles import read_model_file
from vramplan.remote import FIRST_CHUNK

sys.path.insert(0, str(Path(__file__).parent))
from test_families import QWEN3_NEXT  # noqa: E402

VRAMPLAN = [sys.executable, "-m", "vramplan"]

TINY = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 100, "tie_word_embeddings": True,
        "max_position_embeddings": 512, "_name_or_path": "acme/tiny"}


def _tiny_tensors(layers=range(2), dtype=np.float16, embed=True) -> dict[str, np.ndarray]:
    """The tensors of TINY (a 2-layer Llama, hidden 64, 2 KV heads of 16, FFN 128, vocab 100)."""
    t = {}
    if embed:
        t["model.embed_tokens.weight"] = np.zeros((100, 64), dtype)
        t["model.norm.weight"] = np.zeros(64, dtype)
    for i in layers:
        p = f"model.layers.{i}."
        t.update({p + "self_attn.q_proj.weight": np.zeros((64, 64), dtype), p + "self_attn.k_proj.weight": np.zeros((32, 64), dtype),
                  p + "self_attn.v_proj.weight": np.zeros((32, 64), dtype), p + "self_attn.o_proj.weight": np.zeros((64, 64), dtype),
                  p + "mlp.gate_proj.weight": np.zeros((128, 64), dtype), p + "mlp.up_proj.weight": np.zeros((128, 64), dtype),
                  p + "mlp.down_proj.weight": np.zeros((64, 128), dtype),
                  p + "input_layernorm.weight": np.zeros(64, dtype), p + "post_attention_layernorm.weight": np.zeros(64, dtype)})
    return t


# TINY by hand: embedding 100 x 64 = 6400, per layer q 4096 + k 2048 + v 2048 + o 4096 + 3 x 8192 + 2 x 64 = 36,992,
# final norm 64: 6400 + 2 x 36,992 + 64 = 80,448 parameters, x 2 bytes in fp16 = 160,896 bytes.
TINY_PARAMS, TINY_BYTES = 80_448, 160_896


def _env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_CACHE=str(tmp_path / "hub"),
               VRAMPLAN_CACHE_DIR=str(tmp_path / "vramplan-cache"), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_ETAG_TIMEOUT="5", HF_HUB_DOWNLOAD_TIMEOUT="5", VRAMPLAN_NO_ENTRYPOINTS="1")
    env.update(extra)
    return env


def _run(args, env) -> subprocess.CompletedProcess:
    return subprocess.run(VRAMPLAN + args, env=env, capture_output=True, text=True, timeout=120)


# -- parsing --------------------------------------------------------------------------------------

def test_hub_ids_parse_and_bad_ones_name_the_field():
    assert hub.parse("hf:Qwen/Qwen3-Next-80B-A3B-Instruct") == hub.HubRef("Qwen/Qwen3-Next-80B-A3B-Instruct", None, None)
    assert hub.parse("hf:acme/tiny@v1.0") == hub.HubRef("acme/tiny", "v1.0", None)
    assert hub.parse("hf:acme/tiny-GGUF/sub/tiny-Q4_K_M.gguf@main") == \
        hub.HubRef("acme/tiny-GGUF", "main", "sub/tiny-Q4_K_M.gguf")
    for bad in ("hf:acme", "hf:/x/y", "hf:acme/tiny/../../etc/passwd.gguf", "hf:acme/tiny@", "hf:a b/c"):
        with pytest.raises(RequestError) as exc:
            hub.parse(bad)
        assert exc.value.problems[0][0] == "llm_key"


def test_policy_from_env(monkeypatch):
    monkeypatch.delenv("VRAMPLAN_HUB_LOOKUPS", raising=False)
    assert hub.policy_from_env(server=False).enabled and not hub.policy_from_env(server=True).enabled
    monkeypatch.setenv("VRAMPLAN_HUB_LOOKUPS", "1")
    monkeypatch.setenv("VRAMPLAN_HUB_TIMEOUT", "3")
    monkeypatch.setenv("VRAMPLAN_HUB_MAX_MB", "2")
    p = hub.policy_from_env(server=True)
    assert (p.enabled, p.timeout_s, p.max_bytes) == (True, 3.0, 2 * 1024 * 1024)
    monkeypatch.setenv("VRAMPLAN_HUB_TIMEOUT", "soon")
    with pytest.raises(RequestError, match="VRAMPLAN_HUB_TIMEOUT"):
        hub.policy_from_env(server=True)


# -- a warm cache, offline ------------------------------------------------------------------------

def test_models_import_hub_id_offline_prints_the_architecture_and_its_state(tmp_path):
    lay_out_hub_cache(tmp_path / "hub", "Qwen/Qwen3-Next-80B-A3B-Instruct", {"config.json": QWEN3_NEXT})
    r = _run(["models", "import", "hf:Qwen/Qwen3-Next-80B-A3B-Instruct"], _env(tmp_path, HF_HUB_OFFLINE="1"))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "model type          qwen3_next" in out
    assert "layer kinds         36 gated DeltaNet, 12 global attention" in out
    # 12 layers x 2 KV heads x 256 x 2 (K, V) x 2 bytes = 24,576 bytes per token
    assert "KV per token        24,576 bytes in 16 bits (12 layers keep a cache)" in out
    # per sequence: vLLM 36 x 544 x 2048 = 40,108,032 = 38.25 MiB; transformers 36 x (8192 x 4 x 2 + 524,288 x 4)
    # = 77,856,768 = 74.25 MiB; llama.cpp 36 x (8192 x 3 + 524,288) x 4 = 79,036,416 = 75.375 MiB
    # SGLang keeps the state in float32 and the conv state in bf16: 36 x (8192 x 3 x 2 + 524,288 x 4) = 77,266,944 = 73.69 MiB
    # runtimes in the catalog's order: the default first, then by key
    assert "transformers 74.25 MiB; llama.cpp 75.38 MiB; sglang 73.69 MiB;" in out
    assert "; vllm 38.25 MiB;" in out
    assert "params (config)     79.67 B (79,674,391,296)" in out
    js = _run(["models", "import", "hf:Qwen/Qwen3-Next-80B-A3B-Instruct", "--format", "json"], _env(tmp_path, HF_HUB_OFFLINE="1"))
    summary = json.loads(js.stdout)
    state = summary["recurrent_state_bytes_per_sequence"]
    assert (state["transformers"], state["vllm"], state["llama.cpp"], state["sglang"]) == \
        (77_856_768, 40_108_032, 79_036_416, 77_266_944)
    assert summary["kind"] == "hub" and summary["params"] is None  # no weights in the cache, none fetched


def test_estimate_with_a_hub_id_reads_the_cached_safetensors_header(tmp_path):
    lay_out_hub_cache(tmp_path / "hub", "acme/tiny", {"config.json": TINY, "model.safetensors": save(_tiny_tensors())})
    env = _env(tmp_path, HF_HUB_OFFLINE="1")
    r = _run(["models", "import", "hf:acme/tiny", "--format", "json"], env)
    info = json.loads(r.stdout)
    assert (info["params"], info["weights_bytes"], info["quantization"]) == (TINY_PARAMS, TINY_BYTES, "fp16")
    r = _run(["inference", "--gpu", "rtx_4090", "--model", "hf:acme/tiny", "--quantization", "fp16", "--format", "json"], env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert f"weights: {TINY_BYTES:,} bytes as the checkpoint's safetensors headers state them" in out["assumptions"]
    r = _run(["inference", "--gpu", "rtx_4090", "--model", "hf:acme/tiny"], env)
    assert r.returncode == 0 and r.stdout.startswith("hf:acme/tiny on 1 x")


def test_a_checkpoint_whose_tensors_disagree_with_the_config_reading_is_said(tmp_path):
    """A family vramplan does not know whose MLP is not gated (up and down only, as Apertus's is): the config is
    read as a gated MLP, 80,448 parameters, while the tensors hold 80,448 - 2 x (128 x 64) = 64,064 (-20%). The
    weights come from the headers; the warning says the rest is in doubt. TINY itself (the same tensors as its
    reading) gets none."""
    cfg = {**TINY, "model_type": "ungated_lm", "_name_or_path": "acme/ungated"}
    tensors = {k: v for k, v in _tiny_tensors().items() if "gate_proj" not in k}
    lay_out_hub_cache(tmp_path / "hub", "acme/ungated", {"config.json": cfg, "model.safetensors": save(tensors)})
    lay_out_hub_cache(tmp_path / "hub", "acme/tiny", {"config.json": TINY, "model.safetensors": save(_tiny_tensors())})
    env = _env(tmp_path, HF_HUB_OFFLINE="1")
    r = _run(["inference", "--gpu", "rtx_4090", "--model", "hf:acme/ungated", "--quantization", "fp16", "--format", "json"], env)
    assert r.returncode == 0, r.stderr
    warned = [w for w in json.loads(r.stdout)["warnings"] if "checkpoint's tensors hold" in w]
    assert warned == ["the checkpoint's tensors hold 64,064 parameters, -20% from the 80,448 vramplan reads from its "
                      "config.json (model_type 'ungated_lm'): it has layers or tensors the reading does not model, so its "
                      "KV cache, activations and speed - estimated from that reading - are uncertain"]
    r = _run(["inference", "--gpu", "rtx_4090", "--model", "hf:acme/tiny", "--quantization", "fp16", "--format", "json"], env)
    assert not [w for w in json.loads(r.stdout)["warnings"] if "checkpoint's tensors hold" in w]
    r = _run(["models", "import", "hf:acme/ungated"], env)  # models import says it beside the two counts
    assert re.search(r"params \(file\) +64,064\n", r.stdout) and "note: the checkpoint's tensors hold 64,064 parameters, -20%" in r.stdout


def test_offline_without_the_model_in_the_cache_says_so(tmp_path):
    r = _run(["inference", "--gpu", "rtx_4090", "--model", "hf:acme/absent"], _env(tmp_path, HF_HUB_OFFLINE="1"))
    assert r.returncode == 2
    assert "config.json of acme/absent is not in the Hugging Face cache and HF_HUB_OFFLINE is set" in r.stderr
    assert "Traceback" not in r.stderr


# -- a loopback Hub: headers by range requests, then offline from the caches ----------------------

def test_sharded_model_from_a_loopback_hub_reads_only_headers_then_works_offline(tmp_path):
    shard1 = save({**_tiny_tensors(layers=[0]), "pad.a": np.zeros(1_000_000, np.float32)})
    shard2 = save({**_tiny_tensors(layers=[1], embed=False), "pad.b": np.zeros(1_000_000, np.float32)})
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map = {k: names[0] for k in json.loads(shard1[8:8 + int.from_bytes(shard1[:8], "little")])}
    weight_map.update({k: names[1] for k in json.loads(shard2[8:8 + int.from_bytes(shard2[:8], "little")])})
    weight_map.pop("__metadata__", None)
    index = {"metadata": {"total_size": len(shard1) + len(shard2)}, "weight_map": weight_map}
    files = {"acme/big/config.json": json.dumps(TINY).encode(), "acme/big/model.safetensors.index.json": json.dumps(index).encode(),
             f"acme/big/{names[0]}": shard1, f"acme/big/{names[1]}": shard2}
    with FileServer(files) as server:
        env = _env(tmp_path, HF_ENDPOINT=server.url)
        r = _run(["models", "import", "hf:acme/big", "--format", "json"], env)
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        # TINY's tensors plus two padding tensors of 1,000,000 fp32 each (4,000,000 bytes each)
        assert info["params"] == TINY_PARAMS + 2_000_000
        assert info["weights_bytes"] == TINY_BYTES + 8_000_000
        assert info["tensor_types"] == {"F16": 20, "F32": 2}
        # each shard (over 4 MB) gave only its first 100,000 bytes - the header is inside them
        assert len(shard1) > 4_000_000 and server.sent[f"acme/big/{names[0]}"] == 100_000
        assert server.sent[f"acme/big/{names[1]}"] == 100_000
        assert server.sent["acme/big/config.json"] == len(files["acme/big/config.json"])
    # the server is gone: offline, the HF cache has config and index, vramplan's cache the headers
    r = _run(["models", "import", "hf:acme/big", "--format", "json"], _env(tmp_path, HF_HUB_OFFLINE="1"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["params"] == TINY_PARAMS + 2_000_000


def test_a_damaged_shard_header_is_refused_with_the_local_files_wording(tmp_path):
    """One check serves a local safetensors file and a Hub shard read by range: 3 F16 elements are
    6 bytes, not the 2 the entry's data_offsets give."""
    header = json.dumps({"w": {"dtype": "F16", "shape": [3], "data_offsets": [0, 2]}}).encode()
    shard = len(header).to_bytes(8, "little") + header + b"\0\0"
    (tmp_path / "model.safetensors").write_bytes(shard)
    why = "is damaged: tensor 'w' of shape [3] does not fill its 2 bytes"
    with pytest.raises(RequestError) as local:
        read_model_file(tmp_path / "model.safetensors")
    assert str(local.value) == f"{tmp_path / 'model.safetensors'}: {why}"
    files = {"acme/bad/config.json": json.dumps(TINY).encode(), "acme/bad/model.safetensors": shard}
    with FileServer(files) as server:
        r = _run(["models", "import", "hf:acme/bad"], _env(tmp_path, HF_ENDPOINT=server.url))
    assert r.returncode == 2 and f"hf:acme/bad: model.safetensors {why}" in r.stderr, r.stderr


def test_a_missing_repository_on_the_hub_is_one_clear_line(tmp_path):
    with FileServer({}) as server:
        r = _run(["models", "import", "hf:acme/nothing"], _env(tmp_path, HF_ENDPOINT=server.url))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "acme/nothing" in r.stderr and "config.json" in r.stderr


def test_the_lookup_byte_budget_is_enforced(tmp_path):
    big_config = dict(TINY, padding="x" * 1_200_000)
    with FileServer({"acme/fat/config.json": json.dumps(big_config).encode()}) as server:
        r = _run(["models", "import", "hf:acme/fat"], _env(tmp_path, HF_ENDPOINT=server.url, VRAMPLAN_HUB_MAX_MB="1"))
        assert r.returncode == 2 and "more than 1,048,576 bytes" in r.stderr
        assert server.sent["acme/fat/config.json"] == 0  # refused on the HEAD's size, before any download


# -- remote GGUF ----------------------------------------------------------------------------------

def _gguf_bytes(tmp_path, big: int = 2_000_000) -> bytes:
    path = tmp_path / "tiny.gguf"
    w = GGUFWriter(str(path), "llama")
    w.add_name("tiny-remote")
    w.add_block_count(2)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_context_length(512)
    w.add_file_type(LlamaFileType.MOSTLY_F16)
    w.add_token_list([f"token-{i}" for i in range(100)])
    w.add_tensor("token_embd.weight", np.zeros((100, 64), np.float16))
    w.add_tensor("blk.0.ffn_up.weight", np.zeros((big // 64, 64), np.float32))  # the bulk of the file
    w.add_tensor("output_norm.weight", np.ones(64, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def test_gguf_by_url_reads_the_header_only_and_keeps_the_local_keys(tmp_path):
    data = _gguf_bytes(tmp_path)
    local = read_model_file(tmp_path / "tiny.gguf")
    with FileServer({"files/tiny.gguf": data}) as server:
        remote = hub.read_model(f"{server.url}/files/tiny.gguf")
        sent = server.sent["files/tiny.gguf"]
    # params: 100 x 64 + 31,250 x 64 + 64 = 2,006,464; bytes: 12,800 (f16) + 8,000,000 (f32) + 256 (f32)
    assert remote["params"] == local["params"] == 6400 + 2_000_000 + 64
    assert remote["weights_bytes"] == local["weights_bytes"] == 12_800 + 8_000_000 + 256
    for key in ("kind", "config", "tensor_types", "quantization", "name"):
        assert remote[key] == local[key]
    assert len(data) > 8_000_000 and sent == remote["bytes_read"] == FIRST_CHUNK  # one 1 MiB range, nothing more


def test_gguf_by_url_from_the_cli_json_keeps_todays_keys(tmp_path):
    data = _gguf_bytes(tmp_path)
    local = json.loads(_run(["models", "import", str(tmp_path / "tiny.gguf"), "--format", "json"], _env(tmp_path)).stdout)
    with FileServer({"tiny.gguf": data}) as server:
        r = _run(["models", "import", f"{server.url}/tiny.gguf", "--format", "json"], _env(tmp_path))
        est = _run(["inference", "--gpu", "rtx_4090", "--model-file", f"{server.url}/tiny.gguf", "--format", "json"],
                   _env(tmp_path))
    assert r.returncode == 0, r.stderr
    remote = json.loads(r.stdout)
    assert set(local) <= set(remote) and remote["params"] == local["params"] == 2_006_464
    assert est.returncode == 0, est.stderr  # an f16 GGUF runs as fp16 (the default runtime)


def test_a_server_that_ignores_range_is_read_only_as_far_as_needed(tmp_path):
    data = _gguf_bytes(tmp_path, big=8_000_000)  # a 32 MB file
    with FileServer({"tiny.gguf": data}, honour_range=False) as server:
        info = hub.read_model(f"{server.url}/tiny.gguf")
    assert info["params"] == 6400 + 8_000_000 + 64
    assert info["bytes_read"] <= FIRST_CHUNK + 65536 < len(data) // 20


def test_truncated_and_missing_remote_files_are_clear_errors(tmp_path):
    data = _gguf_bytes(tmp_path)
    with FileServer({"cut.gguf": data[:200], "junk.gguf": b"not a gguf file at all" * 10}) as server:
        with pytest.raises(RequestError, match="ends at byte 200, inside its GGUF header"):
            hub.read_model(f"{server.url}/cut.gguf")
        with pytest.raises(RequestError, match="no GGUF magic"):
            hub.read_model(f"{server.url}/junk.gguf")
        with pytest.raises(RequestError, match=r"not found \(HTTP 404\)"):
            hub.read_model(f"{server.url}/absent.gguf")


def test_a_hostile_header_is_refused_by_the_same_walk_locally_and_over_http(tmp_path):
    """One header walker reads local and remote GGUFs: 84 bytes claiming an array of 2^62 uint8
    (GGUF v3: magic, version 3, 0 tensors, 1 key "general.evil" of type 9 = array, items of type 0)."""
    import struct

    key = b"general.evil"
    evil = (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
            + struct.pack("<IIQ", 9, 0, 2**62)).ljust(84, b"\0")
    (tmp_path / "evil.gguf").write_bytes(evil)
    why = "is not a usable GGUF file: key general.evil claims an array of 4,611,686,018,427,387,904 items"
    with pytest.raises(RequestError) as local:
        read_model_file(tmp_path / "evil.gguf")
    with FileServer({"evil.gguf": evil}) as server:
        with pytest.raises(RequestError) as remote:
            hub.read_model(f"{server.url}/evil.gguf")
    # the local file's size bounds it too: 84 - (24 header + 20 key + 4 type + 4 item type + 8 count) = 24 left
    assert str(local.value) == f"{tmp_path / 'evil.gguf'}: {why} with 24 bytes left (limit 10,000,000 items)"
    assert str(remote.value) == f"{server.url}/evil.gguf: {why} (limit 10,000,000 items)"


def test_hub_gguf_file_reads_its_header_by_ranges(tmp_path):
    data = _gguf_bytes(tmp_path)
    with FileServer({"acme/tiny-GGUF/tiny-F16.gguf": data}) as server:
        env = _env(tmp_path, HF_ENDPOINT=server.url)
        r = _run(["models", "import", "hf:acme/tiny-GGUF/tiny-F16.gguf", "--format", "json"], env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["params"] == 2_006_464
        assert server.sent["acme/tiny-GGUF/tiny-F16.gguf"] == FIRST_CHUNK
    # remembered under the file's commit: offline, with the server gone, it still answers
    r = _run(["models", "import", "hf:acme/tiny-GGUF/tiny-F16.gguf", "--format", "json"],
             _env(tmp_path, HF_HUB_OFFLINE="1"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["params"] == 2_006_464
    r = _run(["models", "import", "hf:acme/tiny-GGUF/other.gguf"], _env(tmp_path, HF_HUB_OFFLINE="1"))
    assert r.returncode == 2 and "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in r.stderr


# -- the server: off unless the operator turns lookups on -----------------------------------------

def test_server_refuses_hub_ids_unless_the_operator_allows_them(tmp_path, monkeypatch):
    from server_fixtures import ADMIN_SECRET, PREFIX, test_client

    from vramplan.server import create_app
    from vramplan.server.tokens import SQLiteTokenStore

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    store = SQLiteTokenStore(tmp_path / "tokens.db")
    headers = {"Authorization": f"Bearer {store.create('t')}"}
    body = {"gpu_key": "rtx_4090", "llm_key": "hf:acme/tiny"}
    monkeypatch.delenv("VRAMPLAN_HUB_LOOKUPS", raising=False)
    with test_client(create_app(store=store, admin_secret=ADMIN_SECRET)) as c:
        r = c.post(f"{PREFIX}/inference", json=body, headers=headers)
    assert r.status_code == 422 and "VRAMPLAN_HUB_LOOKUPS=1" in r.text

    # allowed: the lookup runs (here against a warm cache laid out on disk, offline)
    import huggingface_hub.constants as hf_constants

    lay_out_hub_cache(tmp_path / "hub", "acme/tiny", {"config.json": TINY, "model.safetensors": save(_tiny_tensors())})
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VRAMPLAN_HUB_LOOKUPS", "1")
    monkeypatch.setenv("VRAMPLAN_CACHE_DIR", str(tmp_path / "vc"))
    hub._MEMO.clear()
    with test_client(create_app(store=store, admin_secret=ADMIN_SECRET)) as c:
        r = c.post(f"{PREFIX}/inference", json={**body, "quantization": "fp16"}, headers=headers)
    assert r.status_code == 200, r.text
    assert f"weights: {TINY_BYTES:,} bytes as the checkpoint's safetensors headers state them" in r.json()["assumptions"]
    hub._MEMO.clear()

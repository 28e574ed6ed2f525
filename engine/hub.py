"""Models and files named on the Hugging Face Hub: ``hf:ORG/NAME[@REVISION]`` and
``hf:ORG/NAME/FILE.gguf[@REVISION]``, plus plain ``http(s)://`` URLs of GGUF files.

A Hub model is read as a user of ``huggingface_hub`` expects: ``config.json`` (and
``model.safetensors.index.json`` where the model is sharded) through :func:`hf_hub_download`,
which honours its cache, ``HF_HUB_OFFLINE``, ``HF_TOKEN`` / the stored login and ``HF_ENDPOINT``.
Weights are never downloaded: each safetensors shard's header (8 bytes of length, then JSON with
every tensor's dtype, shape and byte range) is read from the shard itself when it is in the
cache, else fetched with a range request and kept in vramplan's cache under the resolved commit
(immutable), so a later run works offline. The headers give exact parameters and bytes per dtype.

What one lookup may make the process fetch is bounded by a :class:`Policy` - a timeout, a byte
budget, a number of shards - which the faces choose: the CLI and Python allow lookups; the HTTP
server refuses them unless its operator sets ``VRAMPLAN_HUB_LOOKUPS=1``
(:func:`policy_from_env`). Resolved models are kept in a small in-process cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from .errors import RequestError
from .modelfiles import (MAX_SAFETENSORS_HEADER, _packed_note, _quant_from_config, _result, _safetensors_header,
                         _safetensors_quant, _tally, check_safetensors_header, gguf_description, parse_json_text,
                         read_model_file, with_hf_quant_config)
from .remote import RangeReader, parse_gguf_header

PREFIX = "hf:"

#: A Hub repository id (huggingface_hub ``validate_repo_id``: ORG/NAME of letters, digits, ``-_.``).
_REPO = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}"
_REF = re.compile(rf"^hf:(?P<repo>{_REPO})(?:/(?P<file>[A-Za-z0-9_.\-/]+\.gguf))?(?:@(?P<rev>[A-Za-z0-9_.\-/]{{1,255}}))?$")


@dataclass(frozen=True)
class Policy:
    """What a Hub or URL lookup may do. ``enabled=False`` refuses them with ``why_disabled``."""

    enabled: bool = True
    timeout_s: float = 10.0
    max_bytes: int = 64 * 1024 * 1024  # fetched by one lookup (config, index, headers)
    max_shards: int = 1024  # safetensors shards whose headers one lookup reads
    why_disabled: str = ""


def _env_number(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RequestError([(name, f"must be a number, got {raw!r}")]) from None
    if value < minimum:
        raise RequestError([(name, f"must be at least {minimum:g}, got {raw!r}")])
    return value


def policy_from_env(*, server: bool) -> Policy:
    """The policy for a face: ``VRAMPLAN_HUB_LOOKUPS`` (server default off, else on),
    ``VRAMPLAN_HUB_TIMEOUT`` (seconds, default 10), ``VRAMPLAN_HUB_MAX_MB`` (per lookup,
    default 16 on the server and 64 elsewhere)."""
    flag = os.environ.get("VRAMPLAN_HUB_LOOKUPS")
    if flag is None or not flag.strip():
        enabled = not server
    else:
        enabled = flag.strip().lower() not in ("0", "false", "no", "off")
    why = ("Hub ids and model URLs are turned off on this server (its operator can set VRAMPLAN_HUB_LOOKUPS=1); "
           "send the model's config.json as custom_model instead")
    return Policy(enabled=enabled, timeout_s=_env_number("VRAMPLAN_HUB_TIMEOUT", 10.0, 0.1),
                  max_bytes=int(_env_number("VRAMPLAN_HUB_MAX_MB", 16 if server else 64, 1) * 1024 * 1024),
                  why_disabled="" if enabled else why)


_POLICY: ContextVar[Policy | None] = ContextVar("vramplan_hub_policy", default=None)


def current_policy() -> Policy:
    return _POLICY.get() or policy_from_env(server=False)


@contextlib.contextmanager
def using(policy: Policy):
    """Run the enclosed calls under ``policy`` (the server wraps each engine call in its own)."""
    token = _POLICY.set(policy)
    try:
        yield
    finally:
        _POLICY.reset(token)


@dataclass(frozen=True)
class HubRef:
    repo: str
    revision: str | None
    filename: str | None  # a file in the repo (GGUF), or None for the model itself

    @property
    def text(self) -> str:
        return PREFIX + self.repo + (f"/{self.filename}" if self.filename else "") + (f"@{self.revision}" if self.revision else "")


def is_hub_key(key) -> bool:
    return isinstance(key, str) and key.startswith(PREFIX)


def parse(text: str, field: str = "llm_key") -> HubRef:
    m = _REF.match(text)
    if not m or ".." in text:
        raise RequestError([(field, f"{text!r} is not a Hub id: use hf:ORG/NAME, hf:ORG/NAME@REVISION or "
                                    "hf:ORG/NAME/FILE.gguf[@REVISION]")])
    return HubRef(m["repo"], m["rev"], m["file"])


# -- caches -------------------------------------------------------------------------------------

def cache_dir() -> Path | None:
    """Where parsed headers are kept: ``hub/`` in vramplan's cache (``$VRAMPLAN_CACHE_DIR``, default
    the platform's user cache dir; ``off`` turns it off, as for the validated data files)."""
    chosen = os.environ.get("VRAMPLAN_CACHE_DIR", "").strip()
    if chosen.lower() in ("off", "0", "false", "no"):
        return None
    if chosen:
        return Path(chosen) / "hub"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("vramplan")) / "hub"


def _cache_file(repo: str, commit: str, filename: str) -> Path | None:
    root = cache_dir()
    if root is None:
        return None
    safe = filename.replace("/", "--")
    return root / repo.replace("/", "--") / commit / f"{safe}.json"


def _cache_load(repo: str, commit: str, filename: str):
    path = _cache_file(repo, commit, filename)
    if path is None:
        return None
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _cache_store(repo: str, commit: str, filename: str, data) -> None:
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        return  # only immutable revisions are cached
    path = _cache_file(repo, commit, filename)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), "utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a cache that cannot be written is only slower


_MEMO: dict[str, tuple[float, dict]] = {}
_MEMO_LOCK = threading.Lock()
MEMO_ENTRIES = 128
MEMO_SECONDS = 600.0  # a branch may move; a commit never does


def resolve_model(key: str, field: str = "llm_key") -> dict:
    """The model behind a Hub id, as :func:`vramplan.modelfiles.read_model_file` describes files
    (``kind`` "hub"), remembered for a while per process."""
    ref = parse(key, field)
    if ref.filename:
        raise RequestError([(field, f"{key} names a file; a model key is hf:ORG/NAME[@REVISION] "
                                    "(give GGUF files to --model-file)")])
    policy = current_policy()
    if not policy.enabled:
        raise RequestError([(field, policy.why_disabled)])
    now = time.monotonic()
    with _MEMO_LOCK:
        hit = _MEMO.get(ref.text)
        if hit and now - hit[0] < MEMO_SECONDS:
            return hit[1]
    info = _read_hub_model(ref, policy, field)
    with _MEMO_LOCK:
        if len(_MEMO) >= MEMO_ENTRIES:
            _MEMO.pop(min(_MEMO, key=lambda k: _MEMO[k][0]))
        _MEMO[ref.text] = (now, info)
    return info


def read_model(path) -> dict:
    """Any model a user can name: a local file or folder (:func:`vramplan.modelfiles.read_model_file`),
    an ``http(s)://`` URL of a GGUF file, a Hub model ``hf:ORG/NAME[@REV]`` or a Hub GGUF file
    ``hf:ORG/NAME/FILE.gguf[@REV]`` - the same description for all of them."""
    text = str(path)
    if text.startswith(("http://", "https://", PREFIX)):
        return read_remote(text)
    return read_model_file(path)


def read_remote(text: str) -> dict:
    """A model file given as a URL or Hub name."""
    policy = current_policy()
    if not policy.enabled:
        raise RequestError([(text, policy.why_disabled)])
    if text.startswith(PREFIX):
        ref = parse(text, text)
        if ref.filename:
            return _read_hub_gguf(ref, policy)
        return _read_hub_model(ref, policy, text)
    if not re.match(r"^https?://[^\s/]+", text):
        raise RequestError([(text, "is not an http(s) URL")])
    return _read_url_gguf(text, {}, policy, where=text)


# -- reading from the Hub -----------------------------------------------------------------------

class _Budget:
    def __init__(self, limit: int, where: str):
        self.left, self.limit, self.where = limit, limit, where

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise RequestError([(self.where, f"reading it would fetch more than {self.limit:,} bytes (the lookup limit; "
                                             "VRAMPLAN_HUB_MAX_MB sets it)")])


def _hub_errors(exc: Exception, ref: HubRef, where: str, filename: str) -> RequestError:
    """One clear message for whatever huggingface_hub raised."""
    from huggingface_hub import errors as e

    name = type(exc).__name__
    if isinstance(exc, e.GatedRepoError):
        msg = f"{ref.repo} is gated: accept its license on the Hub and log in (hf auth login) or set HF_TOKEN"
    elif isinstance(exc, e.RepositoryNotFoundError):
        msg = f"no repository {ref.repo} on the Hub (or it is private: log in or set HF_TOKEN)"
    elif isinstance(exc, e.RevisionNotFoundError):
        msg = f"{ref.repo} has no revision {ref.revision!r}"
    elif isinstance(exc, e.LocalEntryNotFoundError) or name == "OfflineModeIsEnabled":
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            msg = f"{filename} of {ref.repo} is not in the Hugging Face cache and HF_HUB_OFFLINE is set"
        else:
            msg = f"cannot reach the Hub for {ref.repo} and {filename} is not in the Hugging Face cache"
    elif isinstance(exc, e.EntryNotFoundError):
        msg = f"{ref.repo} has no {filename}"
    elif "Connect" in name or "Timeout" in name:
        msg = (f"cannot reach the Hub for {ref.repo} ({name}); {filename} is not in the Hugging Face cache "
               "(set HF_HUB_OFFLINE=1 to use only the cache)")
    else:
        msg = f"the Hub lookup of {ref.repo}/{filename} failed ({name}: {str(exc)[:200]})"
    return RequestError([(where, msg)])


def _download(ref: HubRef, filename: str, policy: Policy, budget: _Budget, where: str, *,
              required: bool, revision: str | None = None) -> Path | None:
    """A small repository file through huggingface_hub's cache; None if the repo has no such file."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub import errors as e

    rev = revision or ref.revision
    try:
        if not constants.HF_HUB_OFFLINE:  # check the size before fetching anything
            meta = get_hf_file_metadata(hf_hub_url(ref.repo, filename, revision=rev), timeout=policy.timeout_s)
            if meta.size is not None:
                budget.spend(meta.size)
        path = hf_hub_download(ref.repo, filename, revision=rev, etag_timeout=policy.timeout_s)
    except e.LocalEntryNotFoundError as exc:  # offline or unreachable, and not in the cache
        if not required:
            return None
        raise _hub_errors(exc, ref, where, filename) from None
    except e.EntryNotFoundError:
        if required:
            raise RequestError([(where, f"{ref.repo} has no {filename}")]) from None
        return None
    except RequestError:
        raise
    except Exception as exc:  # network, auth: one clear message
        raise _hub_errors(exc, ref, where, filename) from None
    return Path(path)


def _read_json_file(path: Path, where: str):
    """A downloaded JSON file, parsed with the caps of a local model file (integer digits, nesting)."""
    try:
        raw = path.read_bytes()  # the download budget already bounds its size
    except OSError as exc:
        raise RequestError([(where, f"{path.name} is not valid JSON ({exc})")]) from None
    return parse_json_text(raw, f"{where}: {path.name}")


def _read_hub_model(ref: HubRef, policy: Policy, where: str) -> dict:
    budget = _Budget(policy.max_bytes, where)
    cfg_path = _download(ref, "config.json", policy, budget, where, required=True)
    config = _read_json_file(cfg_path, where)
    if not isinstance(config, dict):
        raise RequestError([(where, "config.json is not a JSON object")])
    commit = cfg_path.parent.name  # huggingface_hub's cache: snapshots/<commit>/config.json
    notes = [f"Hugging Face Hub {ref.repo} at {commit[:12]}"]
    if not isinstance(config.get("quantization_config"), dict):
        # ModelOpt's older exports state their quantization (quant_algo, exclude_modules) only in this small file
        # beside config.json, which vLLM's get_quant_config reads in that case: one more metadata request
        quant_path = _download(ref, "hf_quant_config.json", policy, budget, where, required=False, revision=commit)
        if quant_path is not None:
            config = with_hf_quant_config(config, _read_json_file(quant_path, where), f"{where}: hf_quant_config.json")
    index_path = _download(ref, "model.safetensors.index.json", policy, budget, where, required=False, revision=commit)
    total = None
    if index_path is not None:
        index = _read_json_file(index_path, where)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise RequestError([(where, "model.safetensors.index.json has no valid weight_map")])
        shards = sorted(set(weight_map.values()))
        meta = index.get("metadata") if isinstance(index.get("metadata"), dict) else {}
        total = meta.get("total_size") if isinstance(meta.get("total_size"), int) else None
    else:
        shards = ["model.safetensors"]
    if len(shards) > policy.max_shards:
        raise RequestError([(where, f"{len(shards)} safetensors shards is over the {policy.max_shards}-shard lookup limit")])
    headers, missing = [], 0
    for shard in shards:
        header = _shard_header(ref, commit, shard, policy, budget, where)
        if header is None:
            missing += 1
        else:
            headers.append(header)
    name = ref.repo
    if headers and not missing:
        params, nbytes, types, type_bytes = _tally(headers)
        notes += _packed_note(types, config)
        return _result("hub", config, params, nbytes, types, _safetensors_quant(config, type_bytes), name, notes)
    if index_path is None and missing:
        notes.append("no safetensors weights found (or not reachable offline): architecture only")
        return _result("hub", config, None, None, {}, _quant_from_config(config), name, notes)
    if total:
        notes.append(f"{missing} of {len(shards)} shard headers could not be read (offline and not cached): weights "
                     "bytes come from the index's metadata.total_size; parameter count and dtypes are unknown")
        return _result("hub", config, None, total, {}, _quant_from_config(config), name, notes)
    notes.append("shard headers could not be read: architecture only")
    return _result("hub", config, None, None, {}, _quant_from_config(config), name, notes)


def _shard_header(ref: HubRef, commit: str, shard: str, policy: Policy, budget: _Budget, where: str) -> dict | None:
    """A shard's safetensors header: from the shard in the HF cache, vramplan's cache, or a range
    request (then cached); None when none of them can give it (offline, or no such file)."""
    from huggingface_hub import constants, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.utils import build_hf_headers

    local = try_to_load_from_cache(ref.repo, shard, revision=commit)
    if isinstance(local, str):
        return _safetensors_header(Path(local))
    cached = _cache_load(ref.repo, commit, shard)
    if cached is not None:
        return check_safetensors_header(cached, where, shard=shard)
    if constants.HF_HUB_OFFLINE:
        return None
    url = hf_hub_url(ref.repo, shard, revision=commit)
    reader = RangeReader(url, build_hf_headers(), timeout=policy.timeout_s, max_bytes=max(budget.left, 8),
                         where=where, first_chunk=100_000)
    try:
        with reader:
            (n,) = struct.unpack("<Q", reader.read(8))
            if n == 0 or n > MAX_SAFETENSORS_HEADER:
                raise RequestError([(where, f"{shard} is not a safetensors file (header length {n})")])
            raw = reader.read(n)
    except RequestError as exc:
        if any("not found" in m for _w, m in exc.problems) and shard == "model.safetensors":
            return None  # the repo keeps its weights some other way
        raise
    finally:
        budget.spend(reader.bytes_received)
    header = check_safetensors_header(parse_json_text(raw, f"{where}: {shard}"), where, shard=shard)
    _cache_store(ref.repo, commit, shard, header)
    return header


# -- GGUF files on the Hub or at a URL ----------------------------------------------------------

def _read_hub_gguf(ref: HubRef, policy: Policy) -> dict:
    """``hf:ORG/NAME/FILE.gguf[@REV]``: the file itself when it is in the HF cache, else its header
    over HTTP (token and endpoint as huggingface_hub sets them), remembered per commit."""
    from huggingface_hub import constants, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.utils import build_hf_headers

    where = ref.text
    local = try_to_load_from_cache(ref.repo, ref.filename, revision=ref.revision)
    if isinstance(local, str):
        return read_model_file(local)
    if constants.HF_HUB_OFFLINE:
        commit = _cached_commit(ref)
        hit = _cache_load(ref.repo, commit, ref.filename) if commit else None
        if hit is None:
            raise RequestError([(where, f"{ref.filename} of {ref.repo} is not in the Hugging Face cache and "
                                        "HF_HUB_OFFLINE is set")])
        return gguf_description(hit["meta"], [tuple(t) for t in hit["tensors"]], hit["n_tokens"], where=where,
                                stem=Path(ref.filename).stem)
    commit = _remote_commit(ref, policy, where)
    if commit and re.fullmatch(r"[0-9a-f]{40}", commit):
        _remember_ref(ref, commit)
    hit = _cache_load(ref.repo, commit, ref.filename) if commit else None
    if hit is not None:
        return gguf_description(hit["meta"], [tuple(t) for t in hit["tensors"]], hit["n_tokens"], where=where,
                                stem=Path(ref.filename).stem)
    url = hf_hub_url(ref.repo, ref.filename, revision=commit or ref.revision)
    info, parsed = _url_gguf(url, build_hf_headers(), policy, where, Path(ref.filename).stem)
    if commit:
        _cache_store(ref.repo, commit, ref.filename, parsed)
    return info


def _remote_commit(ref: HubRef, policy: Policy, where: str) -> str | None:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:
        meta = get_hf_file_metadata(hf_hub_url(ref.repo, ref.filename, revision=ref.revision), timeout=policy.timeout_s)
    except Exception as exc:
        raise _hub_errors(exc, ref, where, ref.filename) from None
    return meta.commit_hash


def _cached_commit(ref: HubRef) -> str | None:
    """The commit a revision names in the HF cache (refs/<rev>), or the revision if it is one."""
    from huggingface_hub import constants

    rev = ref.revision or "main"
    if re.fullmatch(r"[0-9a-f]{40}", rev):
        return rev
    for refs in (Path(constants.HF_HUB_CACHE) / f"models--{ref.repo.replace('/', '--')}" / "refs" / rev,
                 _ref_file(ref.repo, rev)):
        if refs is None:
            continue
        try:
            commit = refs.read_text("utf-8").strip()
        except OSError:
            continue
        if re.fullmatch(r"[0-9a-f]{40}", commit):
            return commit
    return None


def _ref_file(repo: str, rev: str) -> Path | None:
    root = cache_dir()
    return None if root is None else root / repo.replace("/", "--") / "refs" / rev.replace("/", "--")


def _remember_ref(ref: HubRef, commit: str) -> None:
    """The commit a revision named when a file was read by ranges (huggingface_hub's own refs are
    written only when it downloads), so that an offline run finds the remembered header."""
    path = _ref_file(ref.repo, ref.revision or "main")
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(commit, "utf-8")
    except OSError:
        pass


def _read_url_gguf(url: str, headers: dict, policy: Policy, where: str) -> dict:
    stem = Path(url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]).stem or "model"
    return _url_gguf(url, headers, policy, where, stem)[0]


def _url_gguf(url: str, headers: dict, policy: Policy, where: str, stem: str) -> tuple[dict, dict]:
    reader = RangeReader(url, headers, timeout=policy.timeout_s, max_bytes=policy.max_bytes, where=where)
    with reader:
        meta, tensors, n_tokens = parse_gguf_header(reader, where)
    info = gguf_description(meta, tensors, n_tokens, where=where, stem=stem)
    info["notes"].append(f"header read over HTTP: {reader.bytes_received:,} bytes"
                         + (f" of a {reader.size:,}-byte file" if reader.size else ""))
    info["bytes_read"] = reader.bytes_received
    return info, {"meta": meta, "tensors": [list(t) for t in tensors], "n_tokens": n_tokens}

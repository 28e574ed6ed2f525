"""Read a GGUF header over HTTP with range requests - never the tensor data.

A GGUF file starts with its metadata and tensor table (llama.cpp ``gguf.md``: magic, version,
tensor count, key/value count, the key/values, then one info record per tensor: name, dims, type,
offset), and the tensors follow, aligned. Everything vramplan needs - the architecture keys and
each tensor's shape and type, hence its exact size - is in that header, which takes a few MB at
most (the tokenizer's vocabulary is most of it) whatever the file's size. :class:`RangeReader`
fetches the file from the start in growing chunks (``Range: bytes=a-b``), only as far as the
parser asks, and counts every byte it received; :func:`parse_gguf_header` walks the header - the
one walker, which reads local files too (:func:`vramplan.modelfiles.check_gguf_header`) - within
:data:`LIMITS`.

Plain ``http(s)://`` URLs work as given (loopback included); Hugging Face files come through
:mod:`vramplan.hub`, which adds the token and endpoint ``huggingface_hub`` would use.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import RequestError

#: Bounds on what a GGUF header may ask the reader to take in; a file past them is refused,
#: naming the bound. (The largest real headers - 150k-token vocabularies with merges - are under 16 MiB.)
LIMITS = {
    "header_bytes": 64 * 1024 * 1024,  # bytes read before the tensor table ends
    "kv_count": 100_000,  # metadata keys
    "tensor_count": 1_000_000,  # tensor records
    "string_bytes": 16 * 1024 * 1024,  # one string (a chat template is the longest real one)
    "array_items": 10_000_000,  # one array (a vocabulary or its merges)
    "dims": 8,  # dimensions of one tensor
}

#: First and largest request sizes; each request after the first doubles, up to the largest, so a
#: header is read with at most MAX_CHUNK bytes beyond its end.
FIRST_CHUNK = 1024 * 1024
MAX_CHUNK = 2 * 1024 * 1024

#: GGUF value types (ggml's gguf.h ``enum gguf_type``) -> struct format of one value; 8 = string, 9 = array.
GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
GGUF_STRING, GGUF_ARRAY = 8, 9
#: Arrays nest at most this deep in a GGUF header (real files: arrays of scalars or strings only).
GGUF_NESTING = 4
#: Longest metadata key name (real ones: under 60 bytes) and most elements of one tensor (2^50,
#: a thousand times the largest real tensor).
MAX_KEY_BYTES = 65536
MAX_TENSOR_ELEMENTS = 1 << 50


@dataclass
class RangeReader:
    """Sequential reads over an HTTP(S) resource, fetched by ranges as the reader advances.

    ``bytes_received`` counts what came over the network (a server that ignores ``Range`` and
    sends the whole file is read only as far as needed, then the connection is closed).
    """

    url: str
    headers: dict
    timeout: float = 10.0
    max_bytes: int = LIMITS["header_bytes"]
    where: str = "model file"
    first_chunk: int = FIRST_CHUNK  # a safetensors header is usually under 100 kB; a GGUF one a few MB

    def __post_init__(self) -> None:
        import httpx

        self._client = httpx.Client(timeout=self.timeout, follow_redirects=True, headers=self.headers)
        self._buf = bytearray()
        self._pos = 0  # read position within the file
        self._next = self.first_chunk
        self.bytes_received = 0
        self.size: int | None = None  # the file's size, from Content-Range, when the server says

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "RangeReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n:
            self._fetch(n)
        out = bytes(self._buf[self._pos:self._pos + n])
        self._pos += n
        return out

    @property
    def position(self) -> int:
        return self._pos

    def _fetch(self, need: int) -> None:
        import httpx

        start = len(self._buf)
        want = max(self._next, need - (start - self._pos))
        if start + want > self.max_bytes:
            want = self.max_bytes - start
            if want <= 0 or start - self._pos + want < need:
                raise RequestError([(self.where, f"its header goes past {self.max_bytes:,} bytes; vramplan reads "
                                                 "at most that much of a remote file")])
        self._next = min(self._next * 2, MAX_CHUNK)
        end = start + want - 1
        try:
            with self._client.stream("GET", self.url, headers={"Range": f"bytes={start}-{end}"}) as resp:
                if resp.status_code in (401, 403):
                    raise RequestError([(self.where, f"access denied (HTTP {resp.status_code}); for a gated Hugging Face "
                                                     "model, log in (hf auth login) or set HF_TOKEN")])
                if resp.status_code == 404:
                    raise RequestError([(self.where, "not found (HTTP 404)")])
                if resp.status_code == 416 or (resp.status_code == 206 and start > 0 and self.size is not None
                                               and start >= self.size):
                    raise RequestError([(self.where, f"the file ends at byte {start:,}, inside its GGUF header "
                                                     "(truncated or not a GGUF file)")])
                if resp.status_code not in (200, 206):
                    raise RequestError([(self.where, f"HTTP {resp.status_code} from the server")])
                self._note_size(resp.headers.get("content-range"))
                skip = start if resp.status_code == 200 else 0  # Range ignored: the body starts at byte 0
                got = 0
                for chunk in resp.iter_bytes():
                    self.bytes_received += len(chunk)
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                    take = chunk[:want - got]
                    self._buf += take
                    got += len(take)
                    if got >= want:
                        break
                if got == 0:
                    raise RequestError([(self.where, f"the file ends at byte {start:,}, inside its GGUF header "
                                                     "(truncated or not a GGUF file)")])
        except httpx.TimeoutException:
            raise RequestError([(self.where, f"no answer within {self.timeout:g} s")]) from None
        except httpx.HTTPError as exc:
            raise RequestError([(self.where, f"cannot be fetched ({type(exc).__name__}: {exc})")]) from None

    def _note_size(self, content_range: str | None) -> None:
        if content_range and "/" in content_range:
            total = content_range.rsplit("/", 1)[1].strip()
            if total.isdigit():
                self.size = int(total)


def parse_gguf_header(reader, where: str = "model file", size: int | None = None
                      ) -> tuple[dict, list[tuple], int | None]:
    """Walk a GGUF header from ``reader.read(n)``: returns ``(metadata, tensors, n_tokens)``.

    The one walker of a GGUF header (ggml docs/gguf.md: magic, version, tensor and key counts,
    key/value pairs, tensor infos), for a local file (:func:`vramplan.modelfiles.check_gguf_header`)
    and over HTTP alike. Every length and count is checked against :data:`LIMITS` and, given the
    file's ``size`` (a local file; ``reader`` then also has ``position``), against the bytes left
    in it, before anything is read or built from it; a refusal names the file and the bound. (A
    remote file's end is the :class:`RangeReader`'s to report, as the byte where it stopped.) ``metadata`` maps keys to Python values (the
    tokenizer's arrays are walked but not kept, except their length as ``n_tokens``); ``tensors``
    lists ``(name, type_name, shape, n_elements, n_bytes)`` with sizes from ggml's block sizes
    (``gguf.GGML_QUANT_SIZES``).
    """
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    def bad(msg: str) -> RequestError:
        return RequestError([(where, f"is not a usable GGUF file: {msg}")])

    def u32() -> int:
        return struct.unpack("<I", reader.read(4))[0]

    def u64() -> int:
        return struct.unpack("<Q", reader.read(8))[0]

    def left() -> int | None:
        return None if size is None else size - reader.position

    def string(what: str) -> str:
        n, rest = u64(), left()
        if n > LIMITS["string_bytes"] or (rest is not None and n > rest):
            with_left = "" if rest is None else f" with {rest:,} bytes left"
            raise bad(f"{what} claims a string of {n:,} bytes{with_left} (limit {LIMITS['string_bytes']:,})")
        return reader.read(n).decode("utf-8", "replace")

    def value(vtype: int, key: str, keep: bool, depth: int = 0):
        if vtype in GGUF_SCALARS:
            fmt = GGUF_SCALARS[vtype]
            return struct.unpack(fmt, reader.read(struct.calcsize(fmt)))[0]
        if vtype == GGUF_STRING:
            return string(f"key {key}")
        if vtype == GGUF_ARRAY:
            if depth >= GGUF_NESTING:
                raise bad(f"key {key} nests arrays more than {GGUF_NESTING} deep")
            etype, count = u32(), u64()
            smallest = struct.calcsize(GGUF_SCALARS[etype]) if etype in GGUF_SCALARS else 8  # else its 8-byte length
            rest = left()
            if count > LIMITS["array_items"] or (rest is not None and count * smallest > rest):
                with_left = "" if rest is None else f" with {rest:,} bytes left"
                raise bad(f"key {key} claims an array of {count:,} items{with_left} "
                          f"(limit {LIMITS['array_items']:,} items)")
            if etype in GGUF_SCALARS and not keep:
                reader.read(struct.calcsize(GGUF_SCALARS[etype]) * count)
                return count
            items = [value(etype, key, keep, depth + 1) for _ in range(count)]
            return items if keep else count
        raise bad(f"key {key} has unknown value type {vtype}")

    if reader.read(4) != b"GGUF":
        raise bad("no GGUF magic")
    version = u32()
    if version & 0xFFFF == 0:
        raise bad("big-endian GGUF files are not supported")
    if version not in (2, 3):
        raise bad(f"version {version} (vramplan reads GGUF versions 2 and 3)")
    n_tensors, n_kv = u64(), u64()
    if n_tensors > LIMITS["tensor_count"]:
        raise bad(f"{n_tensors:,} tensors (limit {LIMITS['tensor_count']:,})")
    if n_kv > LIMITS["kv_count"]:
        raise bad(f"{n_kv:,} metadata keys (limit {LIMITS['kv_count']:,})")
    meta: dict = {}
    n_tokens = None
    for i in range(n_kv):
        n = u64()
        if n > MAX_KEY_BYTES or (left() is not None and n > left()):
            raise bad(f"metadata key {i} claims a name of {n:,} bytes")
        key = reader.read(n).decode("utf-8", "replace")
        vtype = u32()
        keep = not key.startswith("tokenizer.ggml.") or key == "tokenizer.ggml.model"
        v = value(vtype, key, keep)
        if key == "tokenizer.ggml.tokens":
            n_tokens = v if isinstance(v, int) else None
        if keep:
            meta[key] = v
    tensors = []
    for i in range(n_tensors):
        name = string(f"tensor {i}'s name")
        n_dims = u32()
        if n_dims > LIMITS["dims"]:
            raise bad(f"tensor {i} has {n_dims:,} dimensions (limit {LIMITS['dims']})")
        dims = [u64() for _ in range(n_dims)]
        n = 1
        for d in dims:
            n *= d
        if n > MAX_TENSOR_ELEMENTS:
            raise bad(f"tensor {i} claims {n:,} elements")
        ttype = u32()
        u64()  # offset of the data, not needed
        try:
            qtype = GGMLQuantizationType(ttype)
            block, nbytes = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise bad(f"tensor {name!r} has unknown type {ttype}") from None
        if n % block:
            raise bad(f"tensor {name!r} has {n} elements, not a whole number of {qtype.name} blocks of {block}")
        tensors.append((name, qtype.name, dims, n, n // block * nbytes))
    return meta, tensors, n_tokens


"""A model of PyTorch's CUDA caching allocator (c10/cuda/CUDACachingAllocator.cpp, default settings).

Replaying a run's allocations and frees through it gives the run's reserved memory - what nvidia-smi
shows beyond the CUDA context - without a GPU (replay_training.py records the sequence on the meta
device). Pure Python, no dependencies.

Blocks live in segments obtained with cudaMalloc; reserved memory is the sum of segment sizes.
- every request is rounded up to a multiple of 512 bytes (kMinBlockSize);
- requests <= 1 MiB (kSmallSize) use the small pool, whose segments are 2 MiB (kSmallBuffer);
  larger ones the large pool: a new segment is 20 MiB (kLargeBuffer) for requests under 10 MiB
  (kMinLargeAlloc), else the request rounded up to 2 MiB (kRoundLarge);
- a request takes the smallest free block of its pool that fits (best fit, lowest address on ties);
- the block is split when the rest is >= 512 bytes (small pool) or > 1 MiB (large pool); the request
  takes the front;
- a freed block merges with free neighbours of the same segment; segments are never returned
  (no OOM on the measured runs, no empty_cache).

With ``expandable_segments=True`` (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True) each pool is one
virtual-address segment mapped in pages of 2 MiB (small pool) or 20 MiB (large pool): a request no free
block fits extends the segment's free tail by as many pages as it lacks (try_allocate_expandable_block,
map_block), large blocks split whenever 512 bytes or more remain (should_split), and the reserved
memory is what is mapped.
"""
from __future__ import annotations

import bisect

K_MIN_BLOCK = 512
K_SMALL_SIZE = 1 << 20
K_SMALL_BUFFER = 2 << 20
K_LARGE_BUFFER = 20 << 20
K_MIN_LARGE_ALLOC = 10 << 20
K_ROUND_LARGE = 2 << 20


def round_size(n: int) -> int:
    return K_MIN_BLOCK if n < K_MIN_BLOCK else K_MIN_BLOCK * ((n + K_MIN_BLOCK - 1) // K_MIN_BLOCK)


def allocation_size(n: int) -> int:
    if n <= K_SMALL_SIZE:
        return K_SMALL_BUFFER
    if n < K_MIN_LARGE_ALLOC:
        return K_LARGE_BUFFER
    return K_ROUND_LARGE * ((n + K_ROUND_LARGE - 1) // K_ROUND_LARGE)


class Block:
    __slots__ = ("addr", "size", "free", "prev", "next", "small")

    def __init__(self, addr, size, small):
        self.addr, self.size, self.free, self.prev, self.next, self.small = addr, size, True, None, None, small


class Allocator:
    """One device, one stream, no max_split_size (PyTorch's defaults); expandable segments optional."""

    def __init__(self, expandable_segments: bool = False):
        self.pools = {True: [], False: []}  # sorted lists of (size, addr, block) of free blocks
        self.next_addr = 0
        self.reserved = self.allocated = self.peak_reserved = self.peak_allocated = 0
        self.handles = {}
        self.expandable = expandable_segments
        self.tail = {True: None, False: None}  # expandable: the last mapped block of each pool's segment
        self.opened: list[tuple[int, int]] = []  # (request bytes, bytes newly reserved) per cudaMalloc / page map
        self.events_replayed = 0  # mallocs replay() has made: the next one's handle is this + 1

    def _insert(self, b):
        bisect.insort(self.pools[b.small], (b.size, b.addr, b))

    def _remove(self, b):
        pool = self.pools[b.small]
        i = bisect.bisect_left(pool, (b.size, b.addr))
        assert pool[i][2] is b
        pool.pop(i)

    def malloc(self, handle, nbytes: int) -> None:
        """Allocate ``nbytes`` under ``handle`` (DeviceCachingAllocator::malloc: get_free_block, else
        alloc_block of get_allocation_size; then split when should_split)."""
        size = round_size(nbytes)
        small = size <= K_SMALL_SIZE
        pool = self.pools[small]
        i = bisect.bisect_left(pool, (size, -1))
        if i < len(pool):
            b = pool.pop(i)[2]
        elif self.expandable:
            b = self._map_tail(size, small)
        else:
            seg = allocation_size(size)
            b = Block(self.next_addr, seg, small)
            self.next_addr += seg + (1 << 30)  # segments are not adjacent
            self.reserved += seg
            self.opened.append((nbytes, seg))
            self.peak_reserved = max(self.peak_reserved, self.reserved)
        rest = b.size - size
        if rest >= K_MIN_BLOCK and (small or self.expandable or rest > K_SMALL_SIZE):
            r = Block(b.addr + size, rest, small)
            r.prev, r.next = b, b.next
            if b.next:
                b.next.prev = r
            b.next = r
            b.size = size
            self._insert(r)
            if self.tail[small] is b:
                self.tail[small] = r
        b.free = False
        self.handles[handle] = b
        self.allocated += b.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)

    def replay(self, events) -> None:
        """Apply a :class:`Writer` sequence's events: ``e >= 0`` a malloc of ``e`` bytes under the next handle (1, 2,
        ... in order, counted across calls), ``e < 0`` the free of handle ``~e``."""
        for e in events:
            if e >= 0:
                self.events_replayed += 1
                self.malloc(self.events_replayed, e)
            else:
                self.free(~e)

    def _map_tail(self, size: int, small: bool) -> Block:
        """Map the pages a request lacks at the end of the pool's segment, joining a free tail block."""
        page = K_SMALL_BUFFER if small else K_LARGE_BUFFER
        last = self.tail[small]
        have = last.size if last is not None and last.free else 0
        mapped = page * ((size - have + page - 1) // page)
        self.reserved += mapped
        self.opened.append((size, mapped))
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        if have:
            self._remove(last)
            last.size += mapped
            return last
        start = last.addr + last.size if last is not None else (0 if small else 1 << 50)
        b = Block(start, mapped, small)
        if last is not None:
            last.next, b.prev = b, last
        self.tail[small] = b
        return b

    def free(self, handle) -> None:
        """Free ``handle``'s block and merge it with free neighbours (free_block / try_merge_blocks)."""
        b = self.handles.pop(handle)
        self.allocated -= b.size
        b.free = True
        for nb in (b.prev, b.next):
            if nb is not None and nb.free:
                self._remove(nb)
                if nb is b.prev:
                    nb.size += b.size
                    nb.next = b.next
                    if b.next:
                        b.next.prev = nb
                    if self.tail[b.small] is b:
                        self.tail[b.small] = nb
                    b = nb
                else:
                    b.size += nb.size
                    b.next = nb.next
                    if nb.next:
                        nb.next.prev = b
                    if self.tail[b.small] is nb:
                        self.tail[b.small] = b
        self._insert(b)


class Writer:
    """An allocation sequence being written for :func:`replay_peaks`: ``new`` appends a malloc of ``size`` bytes and
    returns its handle (1, 2, ... in the order made), ``news`` several in a row, ``free`` the frees of handles
    (``~handle``). ``events`` may be swapped for a fresh list between chunks; the handle count goes on."""

    def __init__(self) -> None:
        self.events: list[int] = []
        self.count = 0

    def new(self, size: float) -> int:
        self.events.append(int(size))
        self.count += 1
        return self.count

    def news(self, sizes: list[int]) -> list[int]:
        """Several mallocs in a row (sizes already whole bytes), their handles."""
        self.events.extend(sizes)
        self.count += len(sizes)
        return list(range(self.count - len(sizes) + 1, self.count + 1))

    def free(self, *handles: int) -> None:
        self.events.extend(~h for h in handles)


def _free_state(a: Allocator) -> tuple:
    """What decides an :class:`Allocator`'s next moves: the totals, every free block of both pools and, with
    expandable segments, each pool's mapped tail (where the next pages go and whether a free tail joins them)."""
    tails = tuple((t.addr, t.size, t.free) if t is not None else None for t in (a.tail[True], a.tail[False]))
    return (a.reserved, a.allocated, a.next_addr, tuple((s, ad) for s, ad, _ in a.pools[True]),
            tuple((s, ad) for s, ad, _ in a.pools[False]), tails)


class _ChunkFeed:
    """The chunk protocol of :func:`replay_peaks`: after each chunk, send the generator whether the chunk left the
    allocator's state as it found it (a step's last chunk: as the step found it), and take the next chunk."""

    def __init__(self, chunks, start) -> None:
        self.chunks, self.step_start, self.chunk_start = chunks, start, start

    def after(self, now, ends_step: bool):
        """The next chunk, given the state ``now`` the last one left; None at the end of the sequence."""
        repeated = now == (self.step_start if ends_step else self.chunk_start)
        if ends_step:
            self.step_start = now
        self.chunk_start = now
        try:
            return self.chunks.send(repeated)
        except StopIteration:
            return None


def _replay_reference(chunks, expandable_segments: bool) -> tuple[int, int]:
    """:func:`replay_peaks` through the reference :class:`Allocator` (the rules the fast loop does not have:
    expandable segments), with the same chunk protocol."""
    a = Allocator(expandable_segments=expandable_segments)
    feed = _ChunkFeed(chunks, _free_state(a))
    chunk = next(chunks, None)
    while chunk is not None:
        ev, _marks, ends_step = chunk
        a.replay(ev)
        chunk = feed.after(_free_state(a), ends_step)
    return a.peak_reserved, a.peak_allocated


def replay_peaks(chunks, expandable_segments: bool = False) -> tuple[int, int]:
    """``(peak reserved, peak allocated)`` of a sequence given by a generator of chunks
    ``(events, marks, ends_step)`` (vramplan.allocator.training.steps: ``e >= 0`` a malloc of ``e`` bytes,
    handles numbered in order; ``e < 0`` the free of ``~e``). With ``expandable_segments`` (PyTorch's
    ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``) the chunks go through the reference
    :class:`Allocator` in that mode instead, about 1.5 times as slow.

    The rules of :class:`Allocator` (default settings, not expandable), written as one loop over flat
    lists and integer keys instead of method calls and block objects: about 1.5 times as fast, the same
    decisions (tests/test_training_reserve.py replays sequences through both). After each chunk it sends
    the generator whether the chunk repeated: whether the state it left is the state the chunk started
    from (a micro-batch), or the state the step before started from (a step's end). The state is every
    free block, the totals and where the next segment goes - all that decides what the allocator does
    next - so a chunk of the same events from the same state repeats event for event: same blocks,
    same segments, same peaks, and the generator may leave it out."""
    if expandable_segments:
        return _replay_reference(chunks, True)
    # Per block: address, size, free, previous and next block of its segment (-1: none), small pool.
    addr: list[int] = []
    size_: list[int] = []
    free_: list[bool] = []
    prev: list[int] = []
    nxt: list[int] = []
    small_: list[bool] = []
    # Free blocks of each pool as sorted ints size << 160 | addr << 32 | block: best fit (smallest size, then
    # lowest address) is one bisect over plain ints. Addresses stay below 2**44 (segments 1 GiB apart),
    # blocks below 2**20.
    spool: list[int] = []
    lpool: list[int] = []
    handles = [-1]  # handle -> block
    next_addr = reserved = allocated = peak_reserved = peak_allocated = 0
    insort, bisect_left = bisect.insort, bisect.bisect_left
    feed = _ChunkFeed(chunks, (0, 0, 0, (), ()))
    chunk = next(chunks, None)
    while chunk is not None:
        ev, _marks, ends_step = chunk
        for e in ev:
            if e >= 0:
                size = K_MIN_BLOCK if e < K_MIN_BLOCK else K_MIN_BLOCK * ((e + K_MIN_BLOCK - 1) // K_MIN_BLOCK)
                small = size <= K_SMALL_SIZE
                pool = spool if small else lpool
                i = bisect_left(pool, size << 160)
                if i < len(pool):
                    b = pool.pop(i) & 0xFFFFFFFF
                    bsize = size_[b]
                else:
                    bsize = allocation_size(size)
                    b = len(addr)
                    addr.append(next_addr)
                    size_.append(bsize)
                    free_.append(True)
                    prev.append(-1)
                    nxt.append(-1)
                    small_.append(small)
                    next_addr += bsize + (1 << 30)
                    reserved += bsize
                    if reserved > peak_reserved:
                        peak_reserved = reserved
                rest = bsize - size
                if rest >= K_MIN_BLOCK and (small or rest > K_SMALL_SIZE):
                    r = len(addr)
                    ra = addr[b] + size
                    addr.append(ra)
                    size_.append(rest)
                    free_.append(True)
                    prev.append(b)
                    n = nxt[b]
                    nxt.append(n)
                    small_.append(small)
                    if n >= 0:
                        prev[n] = r
                    nxt[b] = r
                    size_[b] = bsize = size
                    insort(pool, (rest << 160) | (ra << 32) | r)
                free_[b] = False
                handles.append(b)
                allocated += bsize
                if allocated > peak_allocated:
                    peak_allocated = allocated
            else:
                b = handles[~e]
                s = size_[b]
                allocated -= s
                free_[b] = True
                pool = spool if small_[b] else lpool
                p = prev[b]
                if p >= 0 and free_[p]:
                    del pool[bisect_left(pool, (size_[p] << 160) | (addr[p] << 32) | p)]
                    s += size_[p]
                    size_[p] = s
                    n = nxt[b]
                    nxt[p] = n
                    if n >= 0:
                        prev[n] = p
                    b = p
                n = nxt[b]
                if n >= 0 and free_[n]:
                    del pool[bisect_left(pool, (size_[n] << 160) | (addr[n] << 32) | n)]
                    s += size_[n]
                    size_[b] = s
                    nn = nxt[n]
                    nxt[b] = nn
                    if nn >= 0:
                        prev[nn] = b
                insort(pool, (s << 160) | (addr[b] << 32) | b)
        chunk = feed.after((reserved, allocated, next_addr, tuple(k >> 32 for k in spool), tuple(k >> 32 for k in lpool)),
                           ends_step)
    return peak_reserved, peak_allocated

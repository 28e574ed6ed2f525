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
    """One device, one stream, expandable_segments off, no max_split_size (PyTorch's defaults)."""

    def __init__(self):
        self.pools = {True: [], False: []}  # sorted lists of (size, addr, block) of free blocks
        self.next_addr = 0
        self.reserved = self.allocated = self.peak_reserved = self.peak_allocated = 0
        self.handles = {}

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
        else:
            seg = allocation_size(size)
            b = Block(self.next_addr, seg, small)
            self.next_addr += seg + (1 << 30)  # segments are not adjacent
            self.reserved += seg
            self.peak_reserved = max(self.peak_reserved, self.reserved)
        rest = b.size - size
        if (small and rest >= K_MIN_BLOCK) or (not small and rest > K_SMALL_SIZE):
            r = Block(b.addr + size, rest, small)
            r.prev, r.next = b, b.next
            if b.next:
                b.next.prev = r
            b.next = r
            b.size = size
            self._insert(r)
        b.free = False
        self.handles[handle] = b
        self.allocated += b.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)

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
                    b = nb
                else:
                    b.size += nb.size
                    b.next = nb.next
                    if nb.next:
                        nb.next.prev = b
        self._insert(b)

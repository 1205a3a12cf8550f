"""Memory at crash time: totals from the vmstat counters and the biggest slab caches."""

from __future__ import annotations

from dataclasses import dataclass, field

import drgn
from drgn.helpers.linux.mm import totalram_pages
from drgn.helpers.linux.slab import (
    for_each_slab_cache,
    slab_cache_pages_per_slab,
    slab_cache_usage,
    slab_total_usage,
)
from drgn.helpers.linux.vmstat import global_node_page_state, nr_free_pages

#: How many slab caches the summary lists.
TOP_SLAB_CACHES = 10


@dataclass
class SlabCache:
    """One slab cache's usage.

    :param name: ``kmem_cache.name``.
    :param object_size: bytes per object (``kmem_cache.object_size``).
    :param active_objects: allocated objects.
    :param total_objects: objects in its slabs, free ones included.
    :param bytes: bytes of memory its slabs take.
    """

    name: str
    object_size: int
    active_objects: int
    total_objects: int
    bytes: int


@dataclass
class MemorySummary:
    """Memory totals in bytes, as ``/proc/meminfo`` would have shown them.

    :param total: ``MemTotal`` (``totalram_pages`` times the page size).
    :param free: ``MemFree`` (``NR_FREE_PAGES``).
    :param page_cache: file-backed pages (``NR_FILE_PAGES``), ``Cached`` plus swap cache.
    :param slab_reclaimable: ``SReclaimable``.
    :param slab_unreclaimable: ``SUnreclaim``.
    :param page_size: bytes per page.
    :param top_slab_caches: the biggest caches by bytes, biggest first.
    """

    total: int
    free: int
    page_cache: int
    slab_reclaimable: int
    slab_unreclaimable: int
    page_size: int
    top_slab_caches: list[SlabCache] = field(default_factory=list)


def slab_caches(prog: drgn.Program) -> list[SlabCache]:
    """Return every slab cache's usage, biggest first (needs ``CONFIG_SLUB_DEBUG`` for SLUB)."""
    page_size = prog["PAGE_SIZE"].value_()
    out = []
    for cache in for_each_slab_cache(prog):
        try:
            usage = slab_cache_usage(cache)
            pages = slab_cache_pages_per_slab(cache)
        except (ValueError, LookupError, AttributeError):
            continue
        out.append(
            SlabCache(
                name=cache.name.string_().decode(errors="replace"),
                object_size=cache.object_size.value_(),
                active_objects=usage.active_objs,
                total_objects=usage.num_objs,
                bytes=usage.num_slabs * pages * page_size,
            )
        )
    out.sort(key=lambda c: c.bytes, reverse=True)
    return out


def memory_summary(prog: drgn.Program, top: int = TOP_SLAB_CACHES) -> MemorySummary:
    """Return the memory totals and the ``top`` biggest slab caches."""
    page_size = prog["PAGE_SIZE"].value_()
    slab = slab_total_usage(prog)
    return MemorySummary(
        total=totalram_pages(prog) * page_size,
        free=nr_free_pages(prog) * page_size,
        page_cache=global_node_page_state(prog, prog["NR_FILE_PAGES"]) * page_size,
        slab_reclaimable=slab.reclaimable_pages * page_size,
        slab_unreclaimable=slab.unreclaimable_pages * page_size,
        page_size=page_size,
        top_slab_caches=slab_caches(prog)[:top],
    )

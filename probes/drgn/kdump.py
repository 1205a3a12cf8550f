"""Check a kdump-compressed (diskdump) file for truncation before drgn reads it.

Layout (makedumpfile's ``diskdump_mod.h``), in blocks of ``block_size`` bytes:
the header (block 0), the sub-header (``sub_hdr_size`` blocks), two bitmaps
(``bitmap_blocks`` blocks together; the second marks the pages dumped), then
one ``page_desc`` per dumped page (``offset``, ``size``, ``flags``,
``page_flags``: 24 bytes), then the page data. The last descriptor says where
the data ends.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

KDUMP_SIGNATURE = b"KDUMP   "
# disk_dump_header after signature, version and utsname (6 x 65 bytes), and the
# 16-byte timeval at offset 408: status, block_size, sub_hdr_size, bitmap_blocks, max_mapnr.
_FIELDS = struct.Struct("<IiiII")
_FIELDS_OFFSET = 424
_PAGE_DESC = struct.Struct("<qIIQ")


@dataclass(frozen=True)
class KdumpLayout:
    """Where a kdump-compressed file's parts are, in bytes.

    :param block_size: ``disk_dump_header.block_size`` (the page size).
    :param pages: pages dumped (bits set in the second bitmap).
    :param descriptors: offset of the first ``page_desc``.
    :param data_end: where the last page's data ends (what the file size must reach).
    """

    block_size: int
    pages: int
    descriptors: int
    data_end: int


def kdump_layout(path: str) -> KdumpLayout | None:
    """Read a kdump-compressed file's layout from its header, bitmap and last descriptor.

    :return: the layout, or ``None`` when the header is not a little-endian diskdump header.
    :raises OSError: the file cannot be read.
    """
    with open(path, "rb") as fh:
        head = fh.read(_FIELDS_OFFSET + _FIELDS.size)
        if not head.startswith(KDUMP_SIGNATURE) or len(head) < _FIELDS_OFFSET + _FIELDS.size:
            return None
        _, block_size, sub_hdr_size, bitmap_blocks, _ = _FIELDS.unpack_from(head, _FIELDS_OFFSET)
        if block_size <= 0 or sub_hdr_size < 0 or bitmap_blocks <= 0 or block_size & 0xFFF:
            return None
        half = bitmap_blocks * block_size // 2
        fh.seek((1 + sub_hdr_size) * block_size + half)
        dumpable = fh.read(half)
        pages = int.from_bytes(dumpable, "little").bit_count()
        descriptors = (1 + sub_hdr_size + bitmap_blocks) * block_size
        data_end = descriptors + pages * _PAGE_DESC.size
        if pages:
            fh.seek(descriptors + (pages - 1) * _PAGE_DESC.size)
            raw = fh.read(_PAGE_DESC.size)
            if len(raw) == _PAGE_DESC.size:
                offset, size, _, _ = _PAGE_DESC.unpack(raw)
                data_end = max(data_end, offset + size)
    return KdumpLayout(block_size, pages, descriptors, data_end)


def kdump_shortfall(path: str) -> tuple[int, int] | None:
    """Tell whether a kdump-compressed file is shorter than its own tables say.

    :return: ``(file size, bytes needed)`` when truncated, else ``None``.
    """
    layout = kdump_layout(path)
    if layout is None:
        return None
    size = os.path.getsize(path)
    return (size, layout.data_end) if size < layout.data_end else None


#: makedumpfile's flattened stream: a 4096-byte header, then records of a
#: big-endian int64 offset and int64 size followed by the data, ended by (-1, -1).
FLAT_HEADER_SIZE = 4096
_FLAT_RECORD = struct.Struct(">qq")


def flattened_shortfall(path: str) -> int | None:
    """Tell whether a makedumpfile-flattened stream stops before its end record.

    Walks the record headers only (a seek per record).

    :return: the file's size when it is truncated, else ``None``.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        pos = FLAT_HEADER_SIZE
        while True:
            fh.seek(pos)
            raw = fh.read(_FLAT_RECORD.size)
            if len(raw) < _FLAT_RECORD.size:
                return size
            offset, length = _FLAT_RECORD.unpack(raw)
            if offset == -1:
                return None
            if length < 0 or offset < 0:
                return size  # garbage where a record should be
            pos += _FLAT_RECORD.size + length
            if pos > size:
                return size


#: kdump_sub_header (block 1): ``phys_base`` (unsigned long), then ``dump_level`` (int).
_SUB_HEADER = struct.Struct("<Qi")


def dump_coverage(path: str) -> tuple[int, int, int] | None:
    """Say how much memory a kdump-compressed file holds.

    :return: ``(dump_level, pages present, max_mapnr)``: makedumpfile's ``-d`` level (the
        page types left out), the pages in the file, the page frames of the machine; or
        ``None`` when the file is not little-endian kdump-compressed.
    """
    layout = kdump_layout(path)
    if layout is None:
        return None
    with open(path, "rb") as fh:
        head = fh.read(_FIELDS_OFFSET + _FIELDS.size)
        max_mapnr = _FIELDS.unpack_from(head, _FIELDS_OFFSET)[4]
        fh.seek(layout.block_size)
        raw = fh.read(_SUB_HEADER.size)
    level = _SUB_HEADER.unpack(raw)[1] if len(raw) == _SUB_HEADER.size else 0
    return level, layout.pages, max_mapnr

"""The wire of the BPF queues: fixed-size entries, and writing them into a submission queue.

What an extension needs to write its own submission queue (a BPF_MAP_TYPE_USER_RINGBUF
whose fd the agent gives it): :class:`Entry`, the one struct the kernel reads, and
:class:`SubmissionQueue`, libbpf's producer over that fd. Only ctypes and libbpf, so an
unprivileged process can use it with no more than Python's standard library. The
agent's side (the program, the completion queue, the accounting) is
:mod:`actions.enforce.queues`. Keep the structs in step with kassist_queues.bpf.c.
"""

from __future__ import annotations

import ctypes

from actions.enforce import libbpf
from actions.enforce.maps import NAME_LEN, VALUE_LEN

#: The version of the entries and completions (``struct kq_entry.version``).
KQ_VERSION = 1
#: A completion's flag: accepted in the kernel; user space checks the rules it keeps.
KQ_F_USER_SPACE_RULES = 1


class Entry(ctypes.Structure):
    """``struct kq_entry``: one submission (fixed size, versioned)."""

    _fields_ = [
        ("version", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("user_data", ctypes.c_uint64),
        ("cgroup_id", ctypes.c_uint64),
        ("uid", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("name", ctypes.c_char * NAME_LEN),
        ("value", ctypes.c_char * VALUE_LEN),
        ("current", ctypes.c_char * VALUE_LEN),
    ]


class CompletionEvent(ctypes.Structure):
    """``struct kq_completion``: the kernel's verdict on one entry."""

    _fields_ = [
        ("version", ctypes.c_uint32),
        ("verdict", ctypes.c_uint32),
        ("reason", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("user_data", ctypes.c_uint64),
        ("seq", ctypes.c_uint64),
        ("cgroup_id", ctypes.c_uint64),
        ("uid", ctypes.c_uint32),
        ("generation", ctypes.c_uint32),
        ("ext_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("name", ctypes.c_char * NAME_LEN),
    ]


assert ctypes.sizeof(Entry) == 352 and ctypes.sizeof(CompletionEvent) == 120


def entry(user_data: int, name: str, value: str, current: str = "", uid: int = 0,
          cgroup_id: int = 0) -> Entry:  # fmt: skip
    """Return ``struct kq_entry`` for one key and value.

    :param name: the key as the kernel names it (``net/core/somaxconn``), < 64 bytes.
    :param value: the value to write, canonical text, < 128 bytes.
    :param current: the key's value now (baseline checks), canonical text.
    :param uid: the submitter (read by the kernel only in the agent's own queue: an
        extension's queue is accounted to the identity the agent registered for it).
    """
    return Entry(
        version=KQ_VERSION, user_data=user_data, cgroup_id=cgroup_id, uid=uid,
        name=name.encode(), value=value.encode(), current=current.encode(),
    )  # fmt: skip


class SubmissionQueue:
    """The producer side of a submission queue (``user_ring_buffer`` over its fd).

    One producer at a time per queue (the ring has no lock of its own).

    :param fd: the BPF_MAP_TYPE_USER_RINGBUF's fd (kept open by the caller).
    :raises OSError: not a user ring buffer, or it cannot be mapped.
    """

    def __init__(self, fd: int) -> None:
        self._rb = libbpf.check_ptr(libbpf.lib().user_ring_buffer__new(fd, None), "map the queue")

    def put(self, item: ctypes.Structure) -> bool:
        """Copy one record into the queue; ``False`` when it is full (nothing written)."""
        lib = libbpf.lib()
        size = ctypes.sizeof(item)
        ptr = lib.user_ring_buffer__reserve(self._rb, size)
        if not ptr:
            return False
        ctypes.memmove(ptr, ctypes.byref(item), size)
        lib.user_ring_buffer__submit(self._rb, ptr)
        return True

    def close(self) -> None:
        """Unmap the queue (the entries in it stay for the kernel)."""
        if self._rb:
            libbpf.lib().user_ring_buffer__free(self._rb)
            self._rb = 0

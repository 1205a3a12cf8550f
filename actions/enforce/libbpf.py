"""The few libbpf calls the enforcer makes, through ctypes (Debian's ``libbpf1``).

Why libbpf through ctypes rather than ``bpftool`` subprocesses or bcc: the ring
buffer needs a real consumer (libbpf's ``ring_buffer__poll`` implements the
epoll wake-up and the consumer-position protocol; bpftool has no ring-buffer
reader), a whole-policy reload must be a few system calls rather than a
``bpftool map update`` process per key, and bcc would compile with its own LLVM
at every start. libbpf's 1.x API is stable, ships in every distribution that has
``libbpf-dev``, and its low-level calls are plain ``int fd`` functions that ctypes
calls without struct definitions. Only ``struct bpf_link_info``'s first fields
are declared here.

libbpf 1.x returns ``-errno`` (or ``NULL`` with ``errno`` set); :func:`check`
turns that into :class:`OSError`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Iterator
from functools import lru_cache
from typing import TypeVar

#: From ``<linux/bpf.h>``.
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_RINGBUF = 27
BPF_MAP_TYPE_USER_RINGBUF = 31
BPF_MAP_TYPE_ARENA = 33
BPF_PROG_TYPE_CGROUP_SYSCTL = 23
BPF_PROG_TYPE_SYSCALL = 31
BPF_CGROUP_SYSCTL = 18
BPF_FUNC_GET_CURRENT_TASK_BTF = 158
BPF_FUNC_LOOP = 181
BPF_FUNC_USER_RINGBUF_DRAIN = 209
BPF_ANY = 0
BPF_NOEXIST = 1

#: ``int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size)``
SampleFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)

_c_int, _c_uint = ctypes.c_int, ctypes.c_uint
_c_void_p, _c_char_p = ctypes.c_void_p, ctypes.c_char_p

#: name -> (restype, argtypes): every function this module calls, declared once.
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "libbpf_probe_bpf_prog_type": (_c_int, [_c_int, _c_void_p]),
    "libbpf_probe_bpf_helper": (_c_int, [_c_int, _c_int, _c_void_p]),
    "libbpf_set_print": (_c_void_p, [_c_void_p]),
    "libbpf_num_possible_cpus": (_c_int, []),
    "bpf_object__open_file": (_c_void_p, [_c_char_p, _c_void_p]),
    "bpf_object__load": (_c_int, [_c_void_p]),
    "bpf_object__close": (None, [_c_void_p]),
    "bpf_object__find_program_by_name": (_c_void_p, [_c_void_p, _c_char_p]),
    "bpf_object__find_map_by_name": (_c_void_p, [_c_void_p, _c_char_p]),
    "bpf_map__reuse_fd": (_c_int, [_c_void_p, _c_int]),
    "bpf_program__fd": (_c_int, [_c_void_p]),
    "bpf_map__fd": (_c_int, [_c_void_p]),
    "bpf_map__type": (_c_int, [_c_void_p]),
    "bpf_map__key_size": (_c_uint, [_c_void_p]),
    "bpf_map__value_size": (_c_uint, [_c_void_p]),
    "bpf_map__max_entries": (_c_uint, [_c_void_p]),
    "bpf_map_create": (_c_int, [_c_int, _c_char_p, _c_uint, _c_uint, _c_uint, _c_void_p]),
    "bpf_map_update_elem": (_c_int, [_c_int, _c_void_p, _c_void_p, ctypes.c_uint64]),
    "bpf_map_lookup_elem": (_c_int, [_c_int, _c_void_p, _c_void_p]),
    "bpf_map_delete_elem": (_c_int, [_c_int, _c_void_p]),
    "bpf_map_update_batch": (
        _c_int,
        [_c_int, _c_void_p, _c_void_p, ctypes.POINTER(ctypes.c_uint32), _c_void_p],
    ),
    "bpf_map_get_next_key": (_c_int, [_c_int, _c_void_p, _c_void_p]),
    "bpf_map_get_fd_by_id": (_c_int, [ctypes.c_uint32]),
    "bpf_link_create": (_c_int, [_c_int, _c_int, _c_int, _c_void_p]),
    "bpf_link_detach": (_c_int, [_c_int]),
    "bpf_obj_pin": (_c_int, [_c_int, _c_char_p]),
    "bpf_obj_get": (_c_int, [_c_char_p]),
    "bpf_obj_get_info_by_fd": (_c_int, [_c_int, _c_void_p, ctypes.POINTER(ctypes.c_uint32)]),
    "ring_buffer__new": (_c_void_p, [_c_int, SampleFn, _c_void_p, _c_void_p]),
    "ring_buffer__poll": (_c_int, [_c_void_p, _c_int]),
    "ring_buffer__free": (None, [_c_void_p]),
    "ring_buffer__consume": (_c_int, [_c_void_p]),
    "ring_buffer__epoll_fd": (_c_int, [_c_void_p]),
    "bpf_prog_test_run_opts": (_c_int, [_c_int, _c_void_p]),
    "libbpf_probe_bpf_map_type": (_c_int, [_c_int, _c_void_p]),
    "user_ring_buffer__new": (_c_void_p, [_c_int, _c_void_p]),
    "user_ring_buffer__reserve": (_c_void_p, [_c_void_p, _c_uint]),
    "user_ring_buffer__submit": (None, [_c_void_p, _c_void_p]),
    "user_ring_buffer__discard": (None, [_c_void_p, _c_void_p]),
    "user_ring_buffer__free": (None, [_c_void_p]),
}


class LinkInfo(ctypes.Structure):
    """The head of ``struct bpf_link_info`` and its ``cgroup`` member."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("cgroup_id", ctypes.c_uint64),
        ("attach_type", ctypes.c_uint32),
        ("_rest", ctypes.c_uint8 * 36),  # the union's other members are larger
    ]


class TestRunOpts(ctypes.Structure):
    """``struct bpf_test_run_opts`` (libbpf 1.x): how ``BPF_PROG_RUN`` runs a program."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", _c_void_p),
        ("data_out", _c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", _c_void_p),
        ("ctx_out", _c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


def run_program(prog_fd: int, ctx: ctypes.Structure | None = None) -> int:
    """Run a ``BPF_PROG_TYPE_SYSCALL`` program once (``BPF_PROG_RUN``) in this task.

    :param ctx: the program's context, copied in and back (a syscall program may write
        it; the kernel copies it back over ``ctx_in`` and refuses a ``ctx_out``).
    :return: the program's return value (an ``int``).
    :raises OSError: the kernel refused to run it.
    """
    opts = TestRunOpts(sz=ctypes.sizeof(TestRunOpts))
    if ctx is not None:
        opts.ctx_in = ctypes.addressof(ctx)
        opts.ctx_size_in = ctypes.sizeof(ctx)
    check(lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "run the BPF program")
    return ctypes.c_int32(opts.retval).value


@lru_cache(maxsize=1)
def lib() -> ctypes.CDLL:
    """Load ``libbpf.so.1`` once and declare the functions used here.

    :raises OSError: libbpf is not installed (Debian: ``libbpf1``).
    """
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    handle = ctypes.CDLL(name, use_errno=True)
    for func, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(handle, func)
        fn.restype = restype
        fn.argtypes = argtypes
    handle.libbpf_set_print(None)  # no libbpf chatter on the agent's stderr
    return handle


def check(ret: int, what: str) -> int:
    """Return ``ret`` when it is not negative, else raise its errno as :class:`OSError`."""
    if ret < 0:
        code = -ret if ret != -1 else (ctypes.get_errno() or errno.EIO)
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return ret


def check_ptr(ptr: int | None, what: str) -> int:
    """Return a non-NULL pointer, else raise ``errno`` as :class:`OSError`."""
    if not ptr:
        code = ctypes.get_errno() or errno.EIO
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return ptr


def link_info(fd: int) -> LinkInfo:
    """Read a link's ``struct bpf_link_info`` (``BPF_OBJ_GET_INFO_BY_FD``)."""
    info = LinkInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "link info")
    return info


K = TypeVar("K", bound=ctypes.Structure)
V = TypeVar("V", bound=ctypes.Structure)


def map_items(fd: int, key_type: type[K], value_type: type[V]) -> Iterator[tuple[K, V]]:
    """Yield a map's entries (``BPF_MAP_GET_NEXT_KEY`` then a lookup), each a fresh copy.

    An entry deleted between the two calls is skipped.
    """
    handle = lib()
    key, nxt = key_type(), key_type()
    prev: K | None = None
    while handle.bpf_map_get_next_key(fd, None if prev is None else ctypes.byref(prev),
                                      ctypes.byref(nxt)) == 0:  # fmt: skip
        ctypes.memmove(ctypes.byref(key), ctypes.byref(nxt), ctypes.sizeof(key))
        value = value_type()
        if handle.bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value)) == 0:
            yield key_type.from_buffer_copy(key), value
        prev = key_type.from_buffer_copy(key)


def _map_info(fd: int) -> ctypes.Array[ctypes.c_uint32]:
    # The head of struct bpf_map_info: type, id, key_size, value_size, max_entries, ...
    buf = (ctypes.c_uint32 * 32)()
    size = ctypes.c_uint32(ctypes.sizeof(buf))
    check(lib().bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(size)), "map info")
    return buf


def map_id(fd: int) -> int:
    """Return a map's kernel id (the second ``__u32`` of ``struct bpf_map_info``)."""
    return int(_map_info(fd)[1])


def same_shape(fd: int, handle: int) -> bool:
    """Tell whether the map behind ``fd`` has the type, key and value sizes and capacity
    that an object's map (``struct bpf_map *handle``, not loaded yet) declares.

    ``bpf_map__reuse_fd`` takes the fd's shape over silently: a map pinned by another
    version of a program would be read with the wrong layout.
    """
    info, handle_lib = _map_info(fd), lib()
    want = (
        handle_lib.bpf_map__type(handle),
        handle_lib.bpf_map__key_size(handle),
        handle_lib.bpf_map__value_size(handle),
        handle_lib.bpf_map__max_entries(handle),
    )
    return (int(info[0]), int(info[2]), int(info[3]), int(info[4])) == want

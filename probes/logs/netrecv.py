"""Receive log messages from the network: UDP datagrams and TCP streams, fairly, in bounds.

The fleet's senders (netconsole, rsyslog, syslog-ng, an OpenTelemetry pipeline) reach
kassist over UDP and TCP. :class:`Receiver` owns the listening sockets and hands out
*messages*, each a :class:`Message` (the peer, the payload bytes, the arrival time): a
datagram, or one frame a TCP stream's framer cut (:mod:`probes.logs.syslog` frames
syslog's octet counts and newlines).

Bounded and fair, whatever the senders do:

- every peer (sender address) has its own queue, bounded in messages and bytes
  (:data:`PEER_MESSAGES`, :data:`PEER_BYTES`), and all queues together are bounded
  (:data:`TOTAL_BYTES`); a message past a bound is dropped and counted, never queued;
- messages leave the queues round-robin, at most :data:`ROUND_QUANTUM` from one peer in
  turn, so a flood from one address costs the others one turn each, never their place;
- a TCP connection is read at most :data:`READ_QUANTUM` bytes a turn, a frame longer
  than the framer's bound is cut off and counted, at most :data:`MAX_CONNECTIONS`
  connections are open (the oldest idle one is closed for a new one).

Listening sockets set ``SO_REUSEPORT``: several receivers (processes) bind one address
and the kernel spreads senders over them, each sender's datagrams or connection always
to the same one (a hash of its address and port).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import selectors
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

#: Messages queued per peer at most.
PEER_MESSAGES = 4096
#: Bytes queued per peer at most.
PEER_BYTES = 4 << 20
#: Bytes queued over all peers at most.
TOTAL_BYTES = 64 << 20
#: Messages taken from one peer in its turn.
ROUND_QUANTUM = 64
#: Bytes read from one TCP connection in its turn.
READ_QUANTUM = 64 << 10
#: Datagrams read from one UDP socket before the queues are served (a drain).
DRAIN_DATAGRAMS = 4096
#: TCP connections open at most.
MAX_CONNECTIONS = 4096
#: Bytes a UDP datagram can hold (IPv4's largest payload).
MAX_DATAGRAM = 65535
#: The receive buffer asked of the kernel for a UDP socket: past ``net.core.rmem_max`` with
#: ``SO_RCVBUFFORCE`` where allowed (CAP_NET_ADMIN), so that a burst waits in the kernel
#: rather than being dropped there for every sender alike.
UDP_RCVBUF = 32 << 20
#: Peers remembered for their counters at most (the least recently heard is forgotten).
MAX_PEERS = 65536

#: The sender networks a receiver accepts (``--allow-from``); empty: every sender.
Allow = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def allowed(peer: str, allow: Allow) -> bool:
    """Tell whether a sender's address (IPv4-mapped IPv6 read as IPv4) is in ``allow``
    (everything is, when ``allow`` is empty).

    >>> net = (ipaddress.ip_network("127.0.0.1/32"),)
    >>> allowed("127.0.0.1", net), allowed("::ffff:127.0.0.1", net), allowed("127.0.0.2", net)
    (True, True, False)
    """
    if not allow:
        return True
    try:
        addr = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in allow)


@dataclass(frozen=True)
class Message:
    """One message from the network.

    :param peer: the sender's address (``ip`` for UDP and TCP alike: its port changes
        with each connection, the host does not).
    :param payload: the datagram, or one frame of a TCP stream.
    :param arrival_us: when it arrived, in microseconds since the Unix epoch.
    :param kind: the listener's kind (``udp`` or ``tcp``).
    :param port: the sender's port (a netconsole sender's state is keyed by address and port).
    """

    peer: str
    payload: bytes
    arrival_us: int
    kind: str = "udp"
    port: int = 0


@dataclass
class ReceiveStats:
    """What receiving saw: counters, safe to read from another thread.

    :param messages: messages handed on.
    :param dropped_queue: messages dropped because their peer's queue (or all queues)
        were full: a flood.
    :param dropped_kernel: datagrams the kernel dropped because the socket's buffer was
        full (``SO_RXQ_OVFL``).
    :param frames_too_long: TCP frames cut off at the framer's bound.
    :param bad_frames: TCP frames the framer could not read (a wrong octet count...).
    :param connections: TCP connections accepted.
    :param connections_refused: connections closed at once (too many open).
    :param not_allowed: datagrams and connections from a sender outside ``--allow-from``,
        dropped unread.
    """

    messages: int = 0
    dropped_queue: int = 0
    dropped_kernel: int = 0
    frames_too_long: int = 0
    bad_frames: int = 0
    connections: int = 0
    connections_refused: int = 0
    not_allowed: int = 0
    by_peer_dropped: dict[str, int] = field(default_factory=dict)


class Framer(Protocol):
    """Cuts a TCP byte stream into messages (one per connection)."""

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next bytes of the stream; return the frames they completed."""
        ...

    def close(self) -> list[bytes]:
        """The stream ended: return what is left as a last frame, if anything."""
        ...

    @property
    def errors(self) -> int:
        """How many frames it could not read so far."""
        ...

    @property
    def too_long(self) -> int:
        """How many frames it cut off at its bound so far."""
        ...


class FairQueue:
    """Per-peer bounded queues served round-robin (thread-safe).

    :param peer_messages: messages one peer may have queued.
    :param peer_bytes: bytes one peer may have queued.
    :param total_bytes: bytes all peers may have queued.
    """

    def __init__(
        self,
        peer_messages: int = PEER_MESSAGES,
        peer_bytes: int = PEER_BYTES,
        total_bytes: int = TOTAL_BYTES,
    ) -> None:
        self._queues: OrderedDict[str, deque[Message]] = OrderedDict()
        self._bytes: dict[str, int] = {}
        self._total = 0
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self.peer_messages = peer_messages
        self.peer_bytes = peer_bytes
        self.total_bytes = total_bytes

    def push(self, msg: Message) -> bool:
        """Queue a message; return ``False`` (dropped) when a bound is reached."""
        size = len(msg.payload)
        with self._lock:
            q = self._queues.get(msg.peer)
            held = self._bytes.get(msg.peer, 0)
            if q is not None and (len(q) >= self.peer_messages or held + size > self.peer_bytes):
                return False
            if self._total + size > self.total_bytes:
                return False
            if q is None:
                q = self._queues[msg.peer] = deque()
            q.append(msg)
            self._bytes[msg.peer] = held + size
            self._total += size
            self._ready.notify()
            return True

    def __len__(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._queues.values())

    def take_round(self, quantum: int = ROUND_QUANTUM, wait: float = 0.0) -> list[Message]:
        """Take at most ``quantum`` messages from each peer in turn (one round), waiting at
        most ``wait`` seconds for one when there is none."""
        out: list[Message] = []
        with self._lock:
            if not self._queues and wait > 0:
                self._ready.wait(wait)
            for peer in list(self._queues):
                q = self._queues[peer]
                for _ in range(min(quantum, len(q))):
                    msg = q.popleft()
                    self._bytes[peer] -= len(msg.payload)
                    self._total -= len(msg.payload)
                    out.append(msg)
                if not q:
                    del self._queues[peer]
                    del self._bytes[peer]
        return out


class _Connection:
    def __init__(self, sock: socket.socket, peer: tuple[str, int], framer: Framer) -> None:
        self.sock = sock
        self.peer = peer
        self.framer = framer
        self.last = time.monotonic()
        self.errors_seen = 0
        self.too_long_seen = 0


def _bind(kind: int, host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with contextlib.suppress(AttributeError, OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


_SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)


def udp_listener(host: str, port: int) -> socket.socket:
    """Open a UDP socket on ``host:port`` (``SO_REUSEPORT``, a big buffer, drop counts).

    :raises OSError: it cannot be bound.
    """
    sock = _bind(socket.SOCK_DGRAM, host, port)
    try:
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), UDP_RCVBUF)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
    sock.setblocking(False)
    return sock


def tcp_listener(host: str, port: int) -> socket.socket:
    """Open a listening TCP socket on ``host:port`` (``SO_REUSEPORT``).

    :raises OSError: it cannot be bound.
    """
    sock = _bind(socket.SOCK_STREAM, host, port)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _host(addr: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host = addr[0]
    return host[7:] if host.startswith("::ffff:") else host


class Receiver:
    """Listen on UDP and TCP sockets and hand out their messages fairly.

    :param udp: UDP sockets (:func:`udp_listener`).
    :param tcp: listening TCP sockets (:func:`tcp_listener`), each with the framer factory
        of its streams.
    :param queue: where messages wait (one per receiver; an HTTP thread may push too).
    :param allow: the sender networks accepted (empty: all); others are dropped unread.
    """

    def __init__(
        self,
        udp: list[socket.socket] | None = None,
        tcp: list[tuple[socket.socket, Callable[[], Framer]]] | None = None,
        queue: FairQueue | None = None,
        allow: Allow = (),
    ) -> None:
        self.queue = queue if queue is not None else FairQueue()
        self.stats = ReceiveStats()
        self.allow = allow
        self._sel = selectors.DefaultSelector()
        self._udp = list(udp or [])
        self._conns: OrderedDict[int, _Connection] = OrderedDict()
        self._drops_seen: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for s in self._udp:
            self._sel.register(s, selectors.EVENT_READ, ("udp", None))
        for s, make in tcp or []:
            self._sel.register(s, selectors.EVENT_READ, ("listen", make))

    def close(self) -> None:
        """Stop reading and close every socket."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        for key in list(self._sel.get_map().values()):
            with contextlib.suppress(OSError):
                key.fileobj.close()  # type: ignore[union-attr]
        self._sel.close()

    def messages(
        self,
        stop: Callable[[], bool],
        idle: Callable[[], None],
        poll_interval: float = 0.1,
    ) -> Iterator[Message | None]:
        """Yield messages as they come until ``stop()``, and ``None`` when none came for
        ``poll_interval`` seconds (a caller's chance to hand on what it held back);
        ``idle()`` is called after each round and before each wait.

        The sockets are read by a thread of their own meanwhile, so that a consumer that
        is slow (or blocked) never stops the reading: what a peer sends past its share
        is dropped at its own queue, never at the kernel's socket buffer, shared by all.
        """
        if self._thread is None and self._sel.get_map():
            self._thread = threading.Thread(target=self._read_loop, args=(poll_interval,),
                                            daemon=True, name="receiver")  # fmt: skip
            self._thread.start()
        try:
            while not stop():
                batch = self.queue.take_round(wait=poll_interval)
                if batch:
                    self.stats.messages += len(batch)
                    yield from batch
                    idle()
                    continue
                idle()
                yield None
            self._stop.set()  # stopping: what was received is still handed on
            if self._thread is not None:
                self._thread.join(timeout=5)
            while batch := self.queue.take_round():
                self.stats.messages += len(batch)
                yield from batch
        finally:
            self.close()

    def _read_loop(self, poll_interval: float) -> None:
        while not self._stop.is_set():
            try:
                self.poll(poll_interval)
            except (OSError, ValueError):  # closed under us while stopping
                if self._stop.is_set():
                    return
                raise

    def poll(self, timeout: float) -> None:
        """Read what the sockets have (waiting at most ``timeout`` seconds for something)."""
        for key, _ in self._sel.select(timeout):
            what, make = key.data
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if what == "udp":
                self._drain_udp(sock)
            elif what == "listen":
                self._accept(sock, make)
            else:
                self._read_tcp(key.fd)

    def _drain_udp(self, sock: socket.socket) -> None:
        now = int(time.time() * 1e6)
        space = socket.CMSG_SPACE(4)
        for _ in range(DRAIN_DATAGRAMS):
            try:
                data, anc, _flags, addr = sock.recvmsg(MAX_DATAGRAM, space)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == _SO_RXQ_OVFL and len(value) >= 4:
                    total = int.from_bytes(value[:4], "little")
                    before = self._drops_seen.get(sock.fileno(), 0)
                    if total > before:
                        self.stats.dropped_kernel += total - before
                        self._drops_seen[sock.fileno()] = total
            if not allowed(addr[0], self.allow):
                self.stats.not_allowed += 1
                continue
            self._push(Message(_host(addr), data, now, "udp", int(addr[1])))

    def _push(self, msg: Message) -> None:
        if not self.queue.push(msg):
            self.stats.dropped_queue += 1
            by_peer = self.stats.by_peer_dropped
            if msg.peer in by_peer or len(by_peer) < MAX_PEERS:
                by_peer[msg.peer] = by_peer.get(msg.peer, 0) + 1

    def _accept(self, listener: socket.socket, make: Callable[[], Framer]) -> None:
        for _ in range(64):
            try:
                conn, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._close_oldest()
                return
            if not allowed(addr[0], self.allow):
                self.stats.not_allowed += 1
                conn.close()
                continue
            if len(self._conns) >= MAX_CONNECTIONS:
                self._close_oldest()
            conn.setblocking(False)
            self.stats.connections += 1
            c = _Connection(conn, addr, make())
            self._conns[conn.fileno()] = c
            self._sel.register(conn, selectors.EVENT_READ, ("tcp", None))

    def _close_oldest(self) -> None:
        if self._conns:
            fd = next(iter(self._conns))
            self.stats.connections_refused += 1
            self._drop(fd)

    def _drop(self, fd: int) -> None:
        c = self._conns.pop(fd, None)
        if c is None:
            return
        now = int(time.time() * 1e6)
        for frame in c.framer.close():
            self._push(Message(_host(c.peer), frame, now, "tcp", int(c.peer[1])))
        self._count_framer(c)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(c.sock)
        c.sock.close()

    def _count_framer(self, c: _Connection) -> None:
        self.stats.bad_frames += c.framer.errors - c.errors_seen
        self.stats.frames_too_long += c.framer.too_long - c.too_long_seen
        c.errors_seen, c.too_long_seen = c.framer.errors, c.framer.too_long

    def _read_tcp(self, fd: int) -> None:
        c = self._conns.get(fd)
        if c is None:
            return
        try:
            data = c.sock.recv(READ_QUANTUM)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(fd)
            return
        c.last = time.monotonic()
        self._conns.move_to_end(fd)
        now = int(time.time() * 1e6)
        for frame in c.framer.feed(data):
            self._push(Message(_host(c.peer), frame, now, "tcp", int(c.peer[1])))
        self._count_framer(c)

"""``kassist agent serve``: the agent daemon on a Unix stream socket.

Peers are authenticated with SO_PEERCRED (root, or a member of the configured
group); anyone else gets one refusal completion, an audit line, and a closed
connection. Validation and history run on the event loop; apply, rollback and
status run one at a time on a single worker thread, so a quick ``validate``
can complete before an ``apply`` submitted earlier (:data:`ROUTES`: one entry per
op of :mod:`actions.protocol`). Malformed, oversized (> 64 KiB) or slow-loris input
closes that connection only; so does a connection idle for ``idle_timeout`` (blank
lines are not activity), and so does a peer that has not read its answers for
``idle_timeout``: past :data:`HIGH_WATER` bytes of answers queued for a connection,
nothing more is read from it until its peer reads (one connection holds a bounded
amount of memory). Of the ``max_connections``, a reserve is kept for root.
Refused connections and malformed entries are audited as bounded records
(:meth:`actions.audit.Audit.bounded`): a flood cannot fill the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import resource
import signal
import socket
import stat
import struct
import sys
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from actions.agent import Agent
from actions.core import Result, result
from actions.enforce.service import (
    EnforceSettings,
    KernelSide,
    reload_policy,
    start_for_agent,
    stop_for_agent,
)
from actions.errors import ActionError, Rejected, StorageError
from actions.model import Completion
from actions.protocol import (
    MAX_ENTRY,
    Apply,
    BadSubmission,
    History,
    Malformed,
    Rollback,
    Status,
    Submission,
    Validate,
    decode_entry,
    encode,
    parse_submission,
)


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a connection (from SO_PEERCRED).

    :param pid: the peer's process id (``pid_t``).
    :param uid: its effective user id (``uid_t``).
    :param gid: its effective group id (``gid_t``).
    """

    pid: int
    uid: int
    gid: int

    def to_dict(self) -> dict[str, Any]:
        """Return the peer as the journal's ``who``."""
        import pwd

        try:
            user = pwd.getpwuid(self.uid).pw_name
        except KeyError:
            user = str(self.uid)
        return {"uid": self.uid, "gid": self.gid, "pid": self.pid, "user": user}


def peer_credentials(sock: socket.socket) -> Peer:
    """Read a Unix socket peer's credentials (``struct ucred``: pid, uid, gid)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def _supplementary_groups(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()


def authorized(peer: Peer, group_gid: int | None) -> bool:
    """Tell whether a peer may talk to the agent: root, or a member of the group."""
    if peer.uid == 0:
        return True
    if group_gid is None:
        return False
    return peer.gid == group_gid or group_gid in _supplementary_groups(peer.pid)


@dataclass
class _Pending:
    """What a connection has sent of an entry not finished yet.

    :param buf: the bytes after the last newline (never only blanks).
    :param started: when the entry in buf began, in the event loop's clock (s).
    :param active: when the last entry came (or the connection opened), same clock.
    """

    buf: bytes = b""
    started: float = 0.0
    active: float = 0.0

    def take_lines(self, chunk: bytes, now: float) -> list[bytes]:
        """Add a chunk read and return the lines it completes (blank ones included)."""
        if not self.buf:
            self.started = now
        self.buf += chunk
        lines: list[bytes] = []
        if b"\n" in chunk:
            *lines, self.buf = self.buf.split(b"\n")
            self.started = now
        if not self.buf.strip():
            self.buf = b""  # blanks are no entry: the connection stays idle
        return lines

    def ended(self, why: str) -> None:
        """The connection ends: nothing more between entries, Malformed inside one."""
        if self.buf:
            raise Malformed(why) from None


def _entries(lines: list[bytes], rest: bytes) -> tuple[list[bytes], Malformed | None]:
    # The entries among complete lines (blanks are none), up to the first one larger than
    # MAX_ENTRY, and that one's error (or the unfinished rest's, once it is larger).
    good: list[bytes] = []
    for line in lines:
        if len(line) + 1 > MAX_ENTRY:
            return good, Malformed(f"entry larger than {MAX_ENTRY} bytes")
        if line.strip():
            good.append(line)
    if len(rest) > MAX_ENTRY:
        return good, Malformed(f"entry larger than {MAX_ENTRY} bytes")
    return good, None


@dataclass
class ServerSettings:
    """How the daemon listens.

    :param socket_path: the socket file.
    :param group: the group allowed besides root (``None``/missing: root only).
    :param mode: the socket file's mode.
    :param idle_timeout: seconds an idle connection may stay open.
    :param entry_timeout: seconds a started entry has to reach its newline (slow loris).
    :param override_interval: seconds between checks for keys changed by someone else.
    :param max_inflight: submissions one connection may have in flight at once.
    :param max_connections: connections open at once; never more than the open-file
        limit (``RLIMIT_NOFILE``) leaves after :data:`FD_RESERVE`.
    :param max_per_peer: connections one user (uid) may hold open at once.
    :param root_reserve: connections of the cap only root may take (at most a quarter).
    """

    socket_path: Path
    group: str | None = "kassist"
    mode: int = 0o660
    idle_timeout: float = 30.0
    entry_timeout: float = 5.0
    override_interval: float = 5.0
    max_inflight: int = 64
    enforce: EnforceSettings = field(default_factory=EnforceSettings)  # actions/enforce
    max_connections: int = 256
    max_per_peer: int = 64
    root_reserve: int = 16


#: Descriptors kept free for the agent's own work (the kernel's files, the journal).
FD_RESERVE = 64
#: Bytes of answers a connection may have waiting for its peer to read them.
HIGH_WATER = 256 << 10


class _NotReading(Exception):
    """A peer that has not read its answers for ``idle_timeout``: its connection is dropped."""


def connection_cap(wanted: int) -> int:
    """Return how many connections may be open at once: ``wanted``, within the fd limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FD_RESERVE))


class AgentServer:
    """Serve an :class:`Agent` on a Unix stream socket."""

    def __init__(
        self, agent: Agent, settings: ServerSettings, log: Callable[[str], None] | None = None
    ) -> None:
        self.agent = agent
        self.settings = settings
        self.log = log or (lambda msg: print(f"kassist agent: {msg}", file=sys.stderr))
        self.group_gid = self._group_gid()
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="kassist-apply")
        self._maintenance = ThreadPoolExecutor(1, thread_name_prefix="kassist-checkpoint")
        self._server: asyncio.AbstractServer | None = None
        self.enforcer: KernelSide | None = None  # --enforce-lockdown/--enforce-guard/--bpf-queues
        self.cap = connection_cap(settings.max_connections)
        #: connections only root may take: non-root peers share cap - reserve
        self.root_reserve = min(settings.root_reserve, self.cap // 4)
        self._open = 0
        self._per_uid: dict[int, int] = {}
        #: submissions under way (all connections): each is answered before the agent stops
        self._submissions: set[asyncio.Task[None]] = set()
        #: SIGTERM/SIGINT came: what has not started is refused, what runs is finished
        self.stopping = False

    def _group_gid(self) -> int | None:
        if not self.settings.group:
            return None
        try:
            return grp.getgrnam(self.settings.group).gr_gid
        except KeyError:
            self.log(
                f"group {self.settings.group!r} does not exist: only root may connect "
                f"(create it: groupadd --system {self.settings.group})"
            )
            return None

    # --- socket -----------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        path = self.settings.socket_path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._remove_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        if self.group_gid is not None:
            os.chown(path, 0 if os.geteuid() == 0 else -1, self.group_gid)
        os.chmod(path, self.settings.mode)
        sock.listen(128)
        sock.setblocking(False)
        return sock

    @staticmethod
    def _remove_stale(path: Path) -> None:
        # The one file the agent ever unlinks: a socket nobody listens on any more.
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise ActionError(f"{path} is a symlink: refusing to replace it", "remove it")
        if not stat.S_ISSOCK(st.st_mode):
            raise ActionError(
                f"{path} exists and is not a socket: refusing to remove it",
                "choose another --socket path",
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # a stale socket from an agent that died
        else:
            raise ActionError(f"an agent already listens on {path}", "stop it first")
        finally:
            probe.close()

    async def serve(self) -> None:
        """Recover, listen, and serve until SIGTERM or SIGINT."""
        try:
            for line in self.agent.recover():
                self.log(line)
        except StorageError as exc:  # served meanwhile; nothing is written until then
            self.log(f"recovery waits for space: {exc.one_line()}")
        for notice in self.agent.check_overrides():
            self.log(notice)
        # before the socket: enforcement asked for and not running stops the agent here
        self.enforcer = start_for_agent(self.agent, self.settings.enforce, self.log)
        sock = self._bind()
        self._server = await asyncio.start_unix_server(
            self._connection, sock=sock, limit=MAX_ENTRY + 1
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_policy)
        watcher = asyncio.create_task(self._watch_overrides())
        self.agent.audit.record(
            "start", pid=os.getpid(), socket=str(self.settings.socket_path),
            policy=self.agent.policy.source,
        )  # fmt: skip
        self.log(f"listening on {self.settings.socket_path} (policy: {self.agent.policy.source})")
        try:
            await stop.wait()
        finally:
            watcher.cancel()
            self._server.close()
            await self._answer_all()
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(self.settings.socket_path).st_mode):
                    self.settings.socket_path.unlink()
            self._writer_thread.shutdown(wait=True)
            self._maintenance.shutdown(wait=True)
            stop_for_agent(self.agent.audit, self.enforcer)
            self.agent.audit.record("stop", pid=os.getpid())
            self.log("stopped (nothing rolled back: rollback is explicit)")

    async def _answer_all(self) -> None:
        # Stopping: the operation under way finishes and every submission read is
        # answered (those not started: refused, nothing done) before the loop ends.
        self.stopping = True
        while self._submissions:
            await asyncio.gather(*self._submissions, return_exceptions=True)

    def _reload_policy(self) -> None:
        # SIGHUP: read the policy file again; the kernel's rules (if enforced) follow whole.
        try:
            self.agent.policy = reload_policy(self.agent.policy, self.agent.audit, self.enforcer)
        except ActionError as exc:
            self.log(f"policy not reloaded (the old one stays): {exc.one_line()}")
            return
        self.log(f"policy reloaded: {self.agent.policy.source}")

    async def _watch_overrides(self) -> None:
        loop = asyncio.get_running_loop()
        failed = ""
        while True:
            await asyncio.sleep(self.settings.override_interval)
            try:
                for notice in await loop.run_in_executor(self._writer_thread, self._maintain):
                    self.log(notice)
                # On its own thread and connection: a passive checkpoint (the journal's
                # only fsync) never holds up an apply queued on the writer thread.
                await loop.run_in_executor(self._maintenance, self.agent.journal.checkpoint)
                failed = ""
            except Exception as exc:  # the watch goes on: a failed check is retried
                why = f"{type(exc).__name__}: {exc}"
                if why != failed:  # said once, not every interval
                    self.log(f"override check failed ({why}); retrying")
                    self.agent.audit.bounded("internal-error", "override-check",
                                             where="override-check", error=why)  # fmt: skip
                failed = why

    def _maintain(self) -> list[str]:
        # Between operations: finish what a full disk left, find overrides, write the
        # audit log's pending summaries.
        lines = self.agent.settle()
        lines += self.agent.check_overrides()
        self.agent.audit.flush()
        return lines

    # --- connections ------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        peer = peer_credentials(sock)
        who = peer.to_dict()
        refusal = self._refusal(peer)
        if refusal is not None:
            rule, reason = refusal
            self.agent.audit.bounded("refused", rule, who=who, reason=f"{rule}: {reason}")
            gone = result(False, "refused", [Rejected(rule, "", reason)])
            with contextlib.suppress(ConnectionError):
                writer.write(encode(gone.to_wire(None)))
            await self._close(writer)
            return
        self._open += 1
        self._per_uid[peer.uid] = self._per_uid.get(peer.uid, 0) + 1
        try:
            await self._serve_connection(reader, writer, who)
        except asyncio.CancelledError:
            pass  # the agent is stopping (Python 3.11's streams would log it as an error)
        finally:
            self._open -= 1
            self._per_uid[peer.uid] -= 1
            if not self._per_uid[peer.uid]:
                del self._per_uid[peer.uid]

    def _refusal(self, peer: Peer) -> tuple[str, str] | None:
        # Who may not be served on this connection: (rule, reason), or None.
        if not authorized(peer, self.group_gid):
            return "auth", (
                f"uid {peer.uid} is neither root nor a member of group {self.settings.group!r}"
            )
        if self._open >= self.cap:
            return "busy", f"{self.cap} connections are open (the agent's cap); try again later"
        if peer.uid != 0 and self._open >= self.cap - self.root_reserve:
            return "busy", (
                f"{self._open} connections are open and the last {self.root_reserve} of the "
                f"agent's cap of {self.cap} are kept for root; try again later"
            )
        if self._per_uid.get(peer.uid, 0) >= self.settings.max_per_peer:
            return "busy", (
                f"uid {peer.uid} holds {self.settings.max_per_peer} connections (the cap per "
                "user); close one first"
            )
        return None

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, who: dict[str, Any]
    ) -> None:
        inflight = asyncio.Semaphore(self.settings.max_inflight)
        tasks: set[asyncio.Task[None]] = set()
        out: list[bytes] = []  # quick completions, written once per chunk read
        bad: str | None = None
        try:
            async for batch in self._batches(reader):
                for line in batch:
                    doc = decode_entry(line)
                    answer = self._answer_now(doc, who)
                    if isinstance(answer, Completion):
                        # Answered on the spot: validation and history only read.
                        out.append(encode(answer.to_wire(doc["user_data"])))
                        await self._keep_up(writer, out)
                        continue
                    self._flush(writer, out)
                    await inflight.acquire()
                    task = asyncio.create_task(self._submission(answer, who, writer, inflight))
                    for held in (tasks, self._submissions):
                        held.add(task)
                        task.add_done_callback(held.discard)
                self._flush(writer, out)
                await self._keep_up(writer, out)
                if self.stopping:
                    break  # what was read is answered; nothing more is read
        except asyncio.CancelledError:
            return  # the agent is stopping; the finally clause closes the connection
        except _NotReading:
            writer.transport.abort()  # its answers cannot be delivered: nothing more is read
            return
        except Malformed as exc:
            bad = str(exc)
        except Exception as exc:  # whatever went wrong, the entry still gets its completion
            bad = f"entry not understood ({type(exc).__name__})"
            self._internal_error(who, exc)
        finally:
            # Every submission that ran gets its completion before the connection closes.
            self._flush(writer, out)
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if bad is not None:
                self.agent.audit.bounded("malformed", "malformed", who=who, reason=bad)
                reply = result(False, "malformed", [Rejected("protocol", "", f"{bad}; closing")])
                with contextlib.suppress(ConnectionError):
                    writer.write(encode(reply.to_wire(None)))
            await self._close(writer)

    async def _keep_up(self, writer: asyncio.StreamWriter, out: list[bytes]) -> None:
        # Answers wait for a peer that reads them: past HIGH_WATER bytes queued, nothing more
        # is answered (nor read) until it has read them, and a peer that reads nothing for
        # idle_timeout is dropped. A peer that pipelines and never reads holds no more.
        queued = sum(len(b) for b in out) + writer.transport.get_write_buffer_size()
        if queued <= HIGH_WATER:
            return
        self._flush(writer, out)
        try:
            await asyncio.wait_for(writer.drain(), self.settings.idle_timeout)
        except (TimeoutError, ConnectionError):
            raise _NotReading from None

    @staticmethod
    def _flush(writer: asyncio.StreamWriter, out: list[bytes]) -> None:
        if out and not writer.is_closing():
            writer.write(b"".join(out))
        out.clear()

    async def _batches(self, reader: asyncio.StreamReader) -> AsyncIterator[list[bytes]]:
        # Yield the complete lines of each chunk read; a partial entry must reach its
        # newline within entry_timeout (slow loris), a connection may go idle_timeout
        # without an entry (blank lines are not entries: they do not keep it open), and
        # no entry may pass MAX_ENTRY bytes. Lines before a bad one are still yielded
        # (and answered) before the connection is closed.
        loop = asyncio.get_running_loop()
        pending = _Pending(active=loop.time())
        while (chunk := await self._chunk(reader, pending)) is not None:
            good, error = _entries(pending.take_lines(chunk, loop.time()), pending.buf)
            if good:
                pending.active = loop.time()
                yield good
            if error is not None:
                raise error

    async def _chunk(self, reader: asyncio.StreamReader, pending: _Pending) -> bytes | None:
        # The next chunk read, or None when the connection ends between entries (idle,
        # closed, reset); Malformed when it ends in the middle of one.
        late = f"entry not finished within {self.settings.entry_timeout:g} s"
        if pending.buf:
            deadline = pending.started + self.settings.entry_timeout
        else:
            deadline = pending.active + self.settings.idle_timeout
        timeout = deadline - asyncio.get_running_loop().time()
        if timeout <= 0:
            pending.ended(late)
            return None
        try:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
        except TimeoutError:
            pending.ended(late)
            return None
        except ConnectionError:
            return None
        if not chunk:
            pending.ended("connection closed in the middle of an entry")
            return None
        return chunk

    async def _submission(
        self,
        sub: Submission,
        who: dict[str, Any],
        writer: asyncio.StreamWriter,
        inflight: asyncio.Semaphore,
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            res = await loop.run_in_executor(self._writer_thread, self._run, sub, who)
        except Exception as exc:  # the agent must answer every submission
            res = self._internal_error(who, exc)
        finally:
            inflight.release()
        if not writer.is_closing():
            writer.write(encode(res.to_wire(sub.user_data)))
            # Stopping, a peer that reads nothing holds the stop up for entry_timeout at most.
            wait = self.settings.entry_timeout if self.stopping else self.settings.idle_timeout
            try:
                await asyncio.wait_for(writer.drain(), wait)
            except TimeoutError:
                writer.transport.abort()  # a peer that reads nothing holds no connection
            except ConnectionError:
                pass

    def _run(self, sub: Submission, who: dict[str, Any]) -> Result:
        # On the writer thread, one at a time: a submission that had not started when the
        # agent was told to stop is refused (nothing done) rather than run unasked-for late.
        if self.stopping:
            why = "the agent is stopping; nothing was done: submit it again once it runs"
            return result(False, "refused", [Rejected("stopping", "", why)])
        return ROUTES[type(sub)].run(self, sub, who)

    def _answer_now(self, doc: dict[str, Any], who: dict[str, Any]) -> Result | Submission:
        # Check the submission against its op's model and answer it on the event loop when
        # it is wrong or only reads (validate, history); else return it for the worker.
        try:
            sub = parse_submission(doc)
        except BadSubmission as exc:
            self.agent.audit.bounded("malformed", "malformed", who=who, reason=str(exc))
            return result(False, "malformed", [Rejected("protocol", "", str(exc))])
        route = ROUTES[type(sub)]
        if not route.quick:
            return sub
        try:
            return route.run(self, sub, who)
        except Exception as exc:  # the agent must answer every submission
            return self._internal_error(who, exc)

    def _internal_error(self, who: dict[str, Any], exc: Exception) -> Result:
        # An exception where none was expected: answered, and audited within the caps
        # (auditing it must not fail in turn: bounded records never raise).
        self.agent.audit.bounded("internal-error", type(exc).__name__, who=who,
                                 error=repr(exc)[:500])  # fmt: skip
        return result(False, "error", [Rejected("internal", "", f"{type(exc).__name__}: {exc}")])

    def status(self) -> Result:
        """Return the agent's status, with the in-kernel enforcement's when it runs."""
        res = self.agent.status()
        if self.enforcer is not None and res.status is not None:
            res.status.enforce = self.enforcer.status()
        return res

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


S = TypeVar("S", bound=Submission)


@dataclass(frozen=True)
class Route(Generic[S]):
    """How the server runs one op.

    :param run: the call, ``(server, submission, who) -> result``.
    :param quick: answered on the event loop (it only reads); else on the worker thread,
        one at a time.
    """

    run: Callable[[AgentServer, S, dict[str, Any]], Result]
    quick: bool


def _validate(srv: AgentServer, s: Validate, who: dict[str, Any]) -> Result:
    return srv.agent.validate(s.recommendations, who)


def _history(srv: AgentServer, s: History, who: dict[str, Any]) -> Result:
    return srv.agent.history(s.id, s.clamped_limit, s.since)


def _apply(srv: AgentServer, s: Apply, who: dict[str, Any]) -> Result:
    return srv.agent.apply(s.recommendations, who, s.persist)


def _rollback(srv: AgentServer, s: Rollback, who: dict[str, Any]) -> Result:
    return srv.agent.rollback(who, s.id, s.since)


def _status(srv: AgentServer, s: Status, who: dict[str, Any]) -> Result:
    return srv.status()


#: One route per op of :data:`actions.protocol.OPS`.
ROUTES: dict[type[Submission], Route[Any]] = {
    Validate: Route(_validate, quick=True),
    History: Route(_history, quick=True),
    Apply: Route(_apply, quick=False),
    Rollback: Route(_rollback, quick=False),
    Status: Route(_status, quick=False),
}


def serve(agent: Agent, settings: ServerSettings) -> None:
    """Run the daemon in this process until SIGTERM or SIGINT."""
    server = AgentServer(agent, settings)
    try:
        asyncio.run(server.serve())
    finally:
        agent.close()

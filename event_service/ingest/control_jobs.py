"""Background jobs handed from gRPC threads to a node's worker thread, and their results.

A gRPC call builds a :class:`Job` (command + a Job-UUID it chose), queues it on the node's
:class:`JobQueue` and waits. The node's worker thread, between two reads of the event
socket, sends it as ``bgapi`` with that Job-UUID (FreeSWITCH's ``+OK Job-UUID`` reply =
:meth:`Job.accepted`), and when the BACKGROUND_JOB event with the same Job-UUID arrives,
hands its body over (:meth:`JobQueue.finish`). If the connection breaks first, every job
not finished fails with :data:`LOST` (sent or not, its outcome is unknown to us).
"""

from __future__ import annotations

import queue
import threading
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import dataclass, field

from event_service.api.control_commands import Command

NOT_SENT = "NODE_NOT_CONNECTED"
LOST = "JOB_RESULT_LOST"
ABANDONED = "ABANDONED"


@dataclass
class Job:
    command: Command
    job_uuid: str = field(default_factory=lambda: str(uuid_module.uuid4()))
    reply: str = ""
    """FreeSWITCH's ``command/reply`` to the bgapi (``+OK Job-UUID: ...``)."""
    result: str | None = None
    """The BACKGROUND_JOB body (``+OK ...`` / ``-ERR ...``)."""
    failure: str = ""
    """:data:`NOT_SENT` or :data:`LOST` when the connection failed the job."""
    sent: bool = False
    """Handed to the worker to write on the socket (:meth:`JobQueue.next_to_send`): from
    then on FreeSWITCH may run it, whatever happens to the reply."""
    withdrawn: bool = False
    """Given up on before it was sent (:meth:`JobQueue.forget`): it never will be."""
    on_settled: Callable[[Job], None] | None = field(default=None, repr=False)
    """Called (on the worker thread) once the job is finished or failed: e.g. to log an
    Originate's outcome, which its caller does not wait for."""
    _accepted: threading.Event = field(default_factory=threading.Event, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    def accepted(self, reply: str) -> None:
        self.reply = reply
        self._accepted.set()

    def finished(self, body: str) -> None:
        self.result = body
        self._settle()

    def failed(self, why: str) -> None:
        self.failure = why
        self._settle()

    def _settle(self) -> None:
        self._accepted.set()
        self._done.set()
        if self.on_settled is not None:
            self.on_settled(self)

    @property
    def settled(self) -> bool:
        """Finished or failed (a failed job still queued must not be sent any more)."""
        return self._done.is_set()

    def wait_accepted(self, timeout: float) -> bool:
        return self._accepted.wait(timeout)

    def wait_done(self, timeout: float) -> bool:
        return self._done.wait(timeout)


class JobQueue:
    """The jobs of one node: queued (to send) and in flight (sent, result awaited)."""

    def __init__(self) -> None:
        self._queued: queue.Queue[Job] = queue.Queue()
        self._in_flight: dict[str, Job] = {}
        self._lock = threading.Lock()

    def put(self, job: Job) -> None:
        with self._lock:
            self._in_flight[job.job_uuid] = job
        self._queued.put(job)

    def next_to_send(self) -> Job | None:
        """The next queued job still wanted (one given up on or failed is skipped), marked
        :attr:`Job.sent` -- under the lock :meth:`forget` takes, so a job is either
        withdrawn or sent, never both."""
        while True:
            try:
                job = self._queued.get_nowait()
            except queue.Empty:
                return None
            with self._lock:
                if job.withdrawn or job.settled:
                    continue
                job.sent = True
            return job

    def finish(self, job_uuid: str, body: str) -> bool:
        """A BACKGROUND_JOB arrived; ``False`` when no waiting job has that id (another
        client's job, or one whose caller gave up)."""
        with self._lock:
            job = self._in_flight.pop(job_uuid, None)
        if job is None:
            return False
        job.finished(body)
        return True

    def forget(self, job: Job) -> bool:
        """The caller stopped waiting (deadline): a late result is dropped, and a job not
        sent yet never will be. ``True`` when it was not sent (nothing reached FreeSWITCH);
        ``False`` when it had been (it may run)."""
        with self._lock:
            self._in_flight.pop(job.job_uuid, None)
            if not job.sent:
                job.withdrawn = True
        if not job.settled:
            job.failed(ABANDONED)
        return not job.sent

    def fail_all(self) -> None:
        """The connection is gone: fail every job, queued ones as not sent."""
        while True:
            try:
                self._queued.get_nowait()
            except queue.Empty:
                break
        with self._lock:
            jobs, self._in_flight = self._in_flight, {}
            for job in jobs.values():
                job.withdrawn = not job.sent
        for job in jobs.values():
            job.failed(LOST if job.sent else NOT_SENT)

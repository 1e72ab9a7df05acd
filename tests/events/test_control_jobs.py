"""The bgapi job queue (pure, threads only): a job the caller gives up on is either
withdrawn before it was sent -- and then never sent -- or known to have been sent; the
Job-UUID routes each result to its own waiter only."""

from __future__ import annotations

from event_service.api.control_commands import Command
from event_service.ingest.control_jobs import ABANDONED, LOST, NOT_SENT, Job, JobQueue


def _job() -> Job:
    return Job(Command("uuid_hold", "0b7b74e2-c831-4fcf-b4c2-07630968a707"))


def test_a_job_forgotten_before_it_was_sent_is_never_sent() -> None:
    jobs = JobQueue()
    job = _job()
    jobs.put(job)
    assert jobs.forget(job) is True
    assert job.failure == ABANDONED and not job.sent
    assert jobs.next_to_send() is None


def test_a_job_forgotten_after_it_was_sent_says_so() -> None:
    jobs = JobQueue()
    job = _job()
    jobs.put(job)
    assert jobs.next_to_send() is job and job.sent
    assert jobs.forget(job) is False
    assert jobs.finish(job.job_uuid, "+OK late\n") is False  # dropped, not misassigned
    assert job.result is None


def test_a_result_reaches_only_the_job_with_its_uuid() -> None:
    jobs = JobQueue()
    first, second = _job(), _job()
    jobs.put(first)
    jobs.put(second)
    assert jobs.finish("not-a-job-of-ours", "+OK\n") is False
    assert jobs.finish(second.job_uuid, "+OK second\n") is True
    assert (first.result, second.result) == (None, "+OK second\n")


def test_a_lost_connection_fails_queued_jobs_as_not_sent_and_sent_ones_as_lost() -> None:
    jobs = JobQueue()
    sent, queued = _job(), _job()
    jobs.put(sent)
    jobs.put(queued)
    assert jobs.next_to_send() is sent
    jobs.fail_all()
    assert (sent.failure, queued.failure) == (LOST, NOT_SENT)
    assert not queued.sent and jobs.next_to_send() is None

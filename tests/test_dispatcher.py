"""The dispatcher: one GPU queue, fair between users, with Stop, queue and rate limits per user."""

from __future__ import annotations

import threading

import pytest

from studio.errors import InvalidRequest, QueueFull
from studio.requests import GenerationResult, make_request
from studio.serving.dispatcher import Dispatcher


class Gate:
    """A backend that records the order in which jobs run and holds the first one until released,
    so a test can fill the queue while something is running."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.saved: list[bool] = []
        self.release = threading.Event()
        self.first_started = threading.Event()

    def __call__(self, request, on_step=None, should_stop=None, on_preview=None, should_skip=None,
                 save=True, **_) -> GenerationResult:
        self.ran.append(request.prompt)
        self.saved.append(save)
        self.first_started.set()
        self.release.wait(10)
        for step in range(3):
            if should_stop():
                return GenerationResult(request=request, images=[], seed=0, stopped=True)
            on_step(step + 1, 3)
        return GenerationResult(request=request, images=[], seed=0)


def _fill(dispatcher: Dispatcher, gate: Gate, jobs: list[tuple[str, str]]):
    """Submit the first job, wait until it runs, then submit the rest while it is held."""
    first = dispatcher.submit(make_request(prompt=jobs[0][1]), user=jobs[0][0])
    assert gate.first_started.wait(5)
    return [first] + [dispatcher.submit(make_request(prompt=p), user=u) for u, p in jobs[1:]]


def test_a_newcomer_waits_for_at_most_one_job_of_a_user_with_ten_queued():
    gate = Gate()
    d = Dispatcher(gate, max_queued=24)
    handles = _fill(d, gate, [("ann", f"ann {i}") for i in range(10)] + [("bob", "bob 0")])
    assert [j.user for j in d.order()][:1] == ["bob"]      # next in line, ahead of ann's nine
    gate.release.set()
    for job in handles:
        job.result(timeout=10)
    assert gate.ran.index("bob 0") <= 1                  # after at most one of ann's jobs
    assert gate.ran[:2] == ["ann 0", "bob 0"]
    assert sorted(gate.ran) == sorted([f"ann {i}" for i in range(10)] + ["bob 0"])   # each once


def test_round_robin_between_three_users():
    gate = Gate()
    d = Dispatcher(gate)
    jobs = [("ann", f"ann {i}") for i in range(4)] + [("bob", f"bob {i}") for i in range(2)] + [("cy", "cy 0")]
    handles = _fill(d, gate, jobs)
    gate.release.set()
    for job in handles:
        job.result(timeout=10)
    assert gate.ran == ["ann 0", "bob 0", "cy 0", "ann 1", "bob 1", "ann 2", "ann 3"]


def test_queue_positions_are_told_while_waiting():
    gate = Gate()
    d = Dispatcher(gate)
    handles = _fill(d, gate, [("ann", "a0"), ("ann", "a1"), ("bob", "b0")])
    a1, b0 = (list(_waiting(j)) for j in handles[1:])
    assert a1 == [1, 2]         # behind the running job, then also behind bob's, who went ahead
    assert b0 == [1]
    gate.release.set()
    kinds = [u.kind for u in handles[2].updates()]
    assert kinds[-1] == "done" and "started" in kinds and kinds.count("progress") == 3


def _waiting(job):
    """The `queued` updates a job has heard so far (positions), without waiting for more."""
    while not job._updates.empty():
        update = job._updates.queue[0]
        if update.kind != "queued":
            return
        yield job._updates.get().ahead


def test_a_stopped_backlog_does_not_cost_its_user_their_next_turn():
    """ann queues six, stops them all, and asks again: her new job waits for at most one of bob's
    (whose first came earlier), not behind bob's turns for the six she no longer wants."""
    gate = Gate()
    d = Dispatcher(gate)
    handles = _fill(d, gate, [("cy", "cy running")] + [("ann", f"ann {i}") for i in range(6)]
                    + [("bob", f"bob {i}") for i in range(3)])
    for job in handles[1:7]:
        job.stop()
    again = d.submit(make_request(prompt="ann again"), user="ann")
    assert [j.request.prompt for j in d.order()] == ["bob 0", "ann again", "bob 1", "bob 2"]
    gate.release.set()
    again.result(timeout=10)
    assert gate.ran[:3] == ["cy running", "bob 0", "ann again"]


def test_one_user_may_hold_at_most_half_the_waiting_places():
    gate = Gate()
    d = Dispatcher(gate, max_queued=4)
    _fill(d, gate, [("ann", "a0"), ("ann", "a1"), ("ann", "a2")])     # a0 runs, two wait
    with pytest.raises(QueueFull, match="You have 2 generations waiting"):
        d.submit(make_request(prompt="a3"), user="ann")
    d.submit(make_request(prompt="b0"), user="bob")                  # others still get in
    gate.release.set()


def test_stop_ends_only_that_sessions_jobs_queued_and_running():
    gate = Gate()
    d = Dispatcher(gate)
    running = d.submit(make_request(prompt="ann running"), user="ann", session="s-ann")
    assert gate.first_started.wait(5)
    queued = d.submit(make_request(prompt="ann queued"), user="ann", session="s-ann")
    other = d.submit(make_request(prompt="bob"), user="bob", session="s-bob")
    assert d.stop("s-ann", "ann") and not d.stop("nobody", "ann")
    assert queued.result(timeout=5).stopped and queued.state == "stopped"   # never started
    gate.release.set()
    assert running.result(timeout=5).stopped
    assert not other.result(timeout=5).stopped
    assert gate.ran == ["ann running", "bob"]


def test_queue_bound_and_rate_limit_refuse_at_once():
    gate = Gate()
    d = Dispatcher(gate, max_queued=2, jobs_per_minute=4)
    handles = _fill(d, gate, [("ann", "a0"), ("ann", "a1"), ("bob", "b0")])
    with pytest.raises(QueueFull, match="Queue is full: 2 generations are waiting"):
        d.submit(make_request(prompt="cy"), user="cy")
    gate.release.set()
    for job in handles:
        job.result(timeout=10)
    d.submit(make_request(prompt="a2"), user="ann").result(timeout=10)
    d.submit(make_request(prompt="a3"), user="ann").result(timeout=10)
    with pytest.raises(InvalidRequest, match="4 jobs a minute per user"):
        d.submit(make_request(prompt="a4"), user="ann")
    d.submit(make_request(prompt="cy"), user="cy").result(timeout=10)   # the refusal was not counted


def test_errors_reach_the_caller_and_the_worker_goes_on():
    def backend(request, **_):
        if request.prompt == "bad":
            raise InvalidRequest("bad prompt")
        if request.prompt == "crash":
            raise RuntimeError("boom")
        return GenerationResult(request=request, images=[], seed=1)
    d = Dispatcher(backend)
    with pytest.raises(InvalidRequest, match="bad prompt"):
        d.submit(make_request(prompt="bad"), user="a").result(timeout=5)
    with pytest.raises(RuntimeError, match="boom"):
        d.submit(make_request(prompt="crash"), user="a").result(timeout=5)
    assert d.submit(make_request(prompt="fine"), user="a").result(timeout=5).seed == 1


def test_real_generations_through_the_studio_are_fair_and_previewed(studio):
    """The real engine behind the dispatcher: ann queues 6 jobs, then bob one; bob's runs second
    or third (after the one running when he came, and at most one more), and previews arrive."""
    ann = [studio.submit(make_request(prompt=f"ann {i}", steps=8, seed=i), user="ann") for i in range(6)]
    bob = studio.submit(make_request(prompt="bob", steps=8, seed=9), user="bob", preview_every_s=1e-9)
    kinds = [u.kind for u in bob.updates()]
    finished = [j for j in ann if j.finished]
    assert len(finished) <= 2, f"bob waited for {len(finished)} of ann's jobs"
    result = bob.result()
    assert len(result.images) == 1 and result.images[0].path.is_file()
    assert "preview" in kinds and kinds[-1] == "done"
    assert all(len(j.result(timeout=60).images) == 1 for j in ann)


def test_a_request_runs_on_the_model_it_names_even_after_a_switch(studio):
    """The tabs name the model the page showed: if someone switches models while a job waits, the
    job still runs on its own (the old first-in-first-out queue kept this by ordering switches
    behind queued jobs). A name that is not in the list is refused with a message."""
    from studio.errors import InvalidRequest
    from studio.models.library import EMBEDDED
    here = studio.current_choice()
    assert here != EMBEDDED
    studio.select_model(EMBEDDED)                       # another user's switch
    result = studio.submit(make_request(prompt="x", steps=1, seed=1, model=here), user="ann").result(timeout=60)
    assert result.images[0].data["model"]["source"] == here and studio.current_choice() == here
    assert result.images[0].data["request"]["model"] == here
    with pytest.raises(InvalidRequest, match="Unknown model"):
        studio.submit(make_request(prompt="x", steps=1, model="no-such-model"), user="ann").result(timeout=60)

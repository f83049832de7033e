"""The pure parts of the LLM-call baselines: selection, databases, answers, retries, deadlines, workers."""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import litellm
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from baselines.best_shot import step_rng
from baselines.deadline import Deadline, time_spent_before
from baselines.evolution import (
    CROSSOVERS,
    FRESH,
    MUTATIONS,
    plan_child,
    select_parents,
    slot_of,
    survivors,
    tournament,
)
from baselines.parallel import run_parallel
from baselines.population import Individual, ProgramDatabase, ranked
from baselines.prompting import best_shot_messages
from baselines.proposals import (
    TOOL_NAME,
    ImplementAlgorithm,
    Proposal,
    ProposalFailure,
    read_answer,
    request_program,
)
from engram.errors import ProviderError
from engram.methods.context import StopRun
from engram.models import calls
from engram.models.calls import RetryPolicy
from engram.models.llm import BudgetExceeded


def individual(experiment: int, score: float, code: str = "") -> Individual:
    return Individual(experiment=experiment, agent=experiment, code=code or f"# program {experiment}\n",
                      score=score, reasoning=f"idea {experiment}")


# -- best-shot database ---------------------------------------------------------------------------------


def test_database_keeps_the_best_and_shows_them_in_ascending_order():
    database = ProgramDatabase(capacity=4)
    for number, score in enumerate([0.5, 0.9, 0.1, 0.7, 0.3, 0.8], 1):
        database.add(individual(number, score))
    assert [m.score for m in database.members] == [0.9, 0.8, 0.7, 0.5]
    for seed in range(20):
        shown = database.sample(random.Random(seed), 3)
        assert len({m.experiment for m in shown}) == 3
        assert [m.score for m in shown] == sorted(m.score for m in shown)  # ascending: the best last
        assert all(m in database.members for m in shown)
    assert database.sample(step_rng(0, 7), 3) == database.sample(step_rng(0, 7), 3)  # seeded per step
    assert len(ProgramDatabase(capacity=5, members=[individual(1, 0.2)]).sample(random.Random(0), 3)) == 1


def test_best_shot_prompt_lists_programs_as_given(cloudcast):
    shown = [individual(4, 0.25, "def search_algorithm(): return 'low'\n"),
             individual(9, 0.75, "def search_algorithm(): return 'high'\n")]
    text = best_shot_messages(cloudcast, shown)[1].content
    assert text.index("'low'") < text.index("'high'")
    assert "score 0.25" in text and "score 0.75" in text and "lowest score to the highest" in text


def test_ties_go_to_the_earlier_experiment():
    assert [i.experiment for i in ranked([individual(5, 0.5), individual(2, 0.5), individual(7, 0.9)])] == [7, 2, 5]


# -- evolution ------------------------------------------------------------------------------------------


def test_tournament_picks_the_best_contender():
    pool = [individual(n, s) for n, s in [(1, 0.1), (2, 0.4), (3, 0.3), (4, 0.2)]]
    assert tournament(pool, random.Random(0), size=10).experiment == 2  # all of them compete
    winners = Counter(tournament(pool, random.Random(seed), size=1).experiment for seed in range(400))
    assert set(winners) == {1, 2, 3, 4}  # size 1 is a uniform draw
    winners = Counter(tournament(pool, random.Random(seed), size=2).experiment for seed in range(400))
    assert winners[1] == 0 and winners[2] > winners[4]  # the worst can never win a pair


def test_parents_are_distinct():
    pool = [individual(1, 0.9), individual(2, 0.5)]
    for seed in range(20):
        parents = select_parents(pool, 2, random.Random(seed), size=3)
        assert sorted(p.experiment for p in parents) == [1, 2]
    assert [p.experiment for p in select_parents(pool, 2, random.Random(0), size=3)] == [1, 2]


def test_operators_follow_the_mutation_rate():
    pool = [individual(n, n / 10) for n in range(1, 6)]
    always = [plan_child(pool, random.Random(s), mutation_rate=1.0, tournament_size=2) for s in range(60)]
    assert {p.operator for p in always} == set(MUTATIONS) and all(len(p.parents) == 1 for p in always)
    never = [plan_child(pool, random.Random(s), mutation_rate=0.0, tournament_size=2) for s in range(60)]
    assert {p.operator for p in never} == set(CROSSOVERS)
    assert all(len({q.experiment for q in p.parents}) == 2 for p in never)
    mixed = Counter(plan_child(pool, random.Random(s), mutation_rate=0.1, tournament_size=2).operator in MUTATIONS
                    for s in range(2000))
    assert 0.07 < mixed[True] / 2000 < 0.13


def test_one_parent_can_only_mutate_and_none_means_a_fresh_program():
    lone = [individual(1, 0.3)]
    plans = [plan_child(lone, random.Random(s), mutation_rate=0.0, tournament_size=3) for s in range(20)]
    assert all(p.operator in MUTATIONS and p.parents == (lone[0],) for p in plans)
    assert plan_child([], random.Random(0), mutation_rate=0.1, tournament_size=3).operator == FRESH


def test_survivors_are_the_best_of_parents_and_children():
    parents = [individual(1, 0.9), individual(2, 0.5)]
    children = [individual(3, 0.4), individual(4, 0.7), individual(5, 0.95)]
    assert [s.experiment for s in survivors(parents, children, 2)] == [5, 1]
    assert [s.experiment for s in survivors(parents, [individual(6, 0.1)], 2)] == [1, 2]  # elitism
    assert [s.experiment for s in survivors(parents, [individual(7, 0.5)], 3)] == [1, 2, 7]  # tie: older first
    assert [s.experiment for s in survivors([], [], 2)] == []


def test_slots_number_individuals_in_generation_order():
    slots = [slot_of(0, c, population=5, elitism=2) for c in range(1, 6)]
    slots += [slot_of(g, c, population=5, elitism=2) for g in (1, 2) for c in range(1, 4)]
    assert slots == list(range(1, 12))


# -- answers and retries --------------------------------------------------------------------------------


def call(args: dict, name: str = TOOL_NAME, call_id: str = "c1") -> dict:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def test_read_answer_accepts_one_call_and_explains_the_rest():
    good = read_answer(AIMessage(content="", tool_calls=[call({"code": "x = 1\n", "reasoning": "r"})]))
    assert good == ImplementAlgorithm(code="x = 1\n", reasoning="r")
    fenced = read_answer(AIMessage(content="", tool_calls=[call({"code": "```python\nx = 1\n```", "reasoning": ""})]))
    assert isinstance(fenced, ImplementAlgorithm) and fenced.code == "x = 1\n"
    problems = {
        "did not call": AIMessage(content="here is my idea"),
        "the only tool": AIMessage(content="", tool_calls=[call({}, name="write_file")]),
        "exactly once": AIMessage(content="", tool_calls=[call({"code": "a", "reasoning": ""}, call_id="1"),
                                                          call({"code": "b", "reasoning": ""}, call_id="2")]),
        "code": AIMessage(content="", tool_calls=[call({"reasoning": "no code"})]),
        "empty": AIMessage(content="", tool_calls=[call({"code": "  \n", "reasoning": "r"})]),
        "not valid JSON": AIMessage(content="", invalid_tool_calls=[
            {"name": TOOL_NAME, "args": "{oops", "id": "c1", "error": "bad json", "type": "invalid_tool_call"}]),
    }
    for expected, message in problems.items():
        answer = read_answer(message)
        assert isinstance(answer, str) and expected in answer, (expected, answer)


class FakeModel:
    """Replies in order; an exception in the list is raised instead. Records what it was sent."""

    def __init__(self, replies: list) -> None:
        self.replies = list(replies)
        self.sent: list[list] = []

    def bind_tools(self, tools: list, **kwargs: object) -> FakeModel:
        assert kwargs.get("tool_choice") == TOOL_NAME
        return self

    def invoke(self, messages: list, **options: Any) -> AIMessage:
        self.sent.append(list(messages))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


GOOD = AIMessage(content="", tool_calls=[call({"code": "x = 1\n", "reasoning": "because"})])
NO_CALL = AIMessage(content="prose only")
NO_WAIT = RetryPolicy(max_retries=2, initial_delay=0, jitter=False)


def ask(model: FakeModel, policy: RetryPolicy = NO_WAIT, **options: Any) -> Proposal | ProposalFailure:
    return request_program(model, [HumanMessage("task")], policy, answer_retries=2, **options)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The retry layer's waits, recorded instead of slept."""
    waited: list[float] = []
    monkeypatch.setattr(calls, "pause", waited.append)
    return waited


def test_malformed_answers_are_sent_back_a_bounded_number_of_times():
    model = FakeModel([NO_CALL, AIMessage(content="", tool_calls=[call({"reasoning": "r"})]), GOOD])
    assert ask(model) == Proposal("x = 1\n", "because", 3)
    assert isinstance(model.sent[1][-1], HumanMessage) and "did not call" in model.sent[1][-1].content
    assert isinstance(model.sent[2][-1], ToolMessage) and model.sent[2][-1].tool_call_id == "c1"

    stubborn = FakeModel([NO_CALL] * 3)
    failure = ask(stubborn)
    assert failure == ProposalFailure("malformed", failure.message, 3) and len(stubborn.sent) == 3


def test_transient_errors_are_retried_and_a_refused_request_stops_the_run(waits: list[float]):
    rate_limit = litellm.RateLimitError("slow down", llm_provider="x", model="x")
    model = FakeModel([rate_limit, rate_limit, GOOD])
    assert ask(model, RetryPolicy(max_retries=2, initial_delay=1.0, jitter=False)).attempts == 3
    assert waits == [1.0, 2.0]  # the agents' backoff

    exhausted = ask(FakeModel([rate_limit] * 3))
    assert isinstance(exhausted, ProposalFailure) and exhausted.kind == "model_error" and exhausted.attempts == 3
    assert exhausted.message.startswith("RateLimitError")
    refusing = FakeModel([litellm.BadRequestError("no", model="x", llm_provider="x"), GOOD])
    with pytest.raises(ProviderError, match="retrying cannot help"):  # no retry cures a 400: the run stops
        ask(refusing)
    assert len(refusing.sent) == 1


def test_a_spent_budget_stops_the_run_instead_of_failing_the_proposal(waits: list[float]):
    over = BudgetExceeded(cap="max_dollars", limit=1.0, spent=1.5, calls=3)
    with pytest.raises(StopRun, match="budget exceeded"):
        ask(FakeModel([over]))
    model = FakeModel([GOOD])

    def refuse() -> None:
        raise StopRun("time budget reached")

    with pytest.raises(StopRun):
        ask(model, before_call=refuse)
    assert model.sent == []  # nothing was sent

    # A wait that would end after the time budget stops the run at once instead of sleeping.
    slow = FakeModel([litellm.RateLimitError("slow down", llm_provider="x", model="x"), GOOD])
    with pytest.raises(StopRun, match=r"time budget reached \(0.5 min\)"):
        ask(slow, RetryPolicy(max_retries=2, initial_delay=3600), deadline=Deadline(0.5))
    assert len(slow.sent) == 1 and waits == []


# -- time budget ----------------------------------------------------------------------------------------


def test_time_spent_by_earlier_sessions_counts():
    events = [{"type": "run_start", "t": 100.0}, {"type": "experiment", "t": 160.0},
              {"type": "resume", "t": 1000.0}, {"type": "experiment", "t": 1030.0},
              {"type": "resume", "t": 5000.0}]
    assert time_spent_before(events) == pytest.approx(90.0)
    assert Deadline(None).stop_reason() is None and Deadline(None).remaining() is None
    assert Deadline(1.0, already_spent_s=61).stop_reason() == "time budget reached (1 min)"
    assert 50 < Deadline(1.0, already_spent_s=5).remaining() <= 55


# -- workers --------------------------------------------------------------------------------------------


def test_workers_bound_the_jobs_in_flight_and_a_stop_waits_for_them():
    lock, full = threading.Lock(), threading.Event()
    running, peak, done = [0], [0], []

    def job(n: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            if running[0] == 3:
                full.set()
        full.wait(10)  # the first jobs wait until three run at once
        with lock:
            running[0] -= 1
        if n == 5:
            raise StopRun("budget reached")
        return n

    jobs = (lambda n=n: job(n) for n in range(1, 20))
    reason = run_parallel(jobs, workers=3, stop_reason=lambda: None, on_done=done.append)
    assert reason == "budget reached"
    assert peak[0] == 3 and running[0] == 0  # nothing still running when it returns
    assert 5 not in done and len(done) < 18
    assert run_parallel(iter([lambda: 1, lambda: 2]), workers=2, stop_reason=lambda: None) is None
    assert run_parallel(iter([lambda: 1]), workers=1, stop_reason=lambda: "time budget reached") == \
        "time budget reached"


def test_an_unexpected_error_in_a_job_is_raised_once_the_jobs_in_flight_are_done():
    gate, started, finished = threading.Event(), threading.Event(), []

    def slow() -> int:
        started.set()
        gate.wait(60)
        finished.append("slow")
        return 1

    def broken() -> int:
        started.wait(60)
        raise RuntimeError("evaluator broke")

    raised: list[BaseException] = []

    def run() -> None:
        try:
            run_parallel(iter([slow, broken, slow]), workers=2, stop_reason=lambda: None)
        except RuntimeError as exc:
            raised.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    started.wait(60)
    runner.join(0.5)
    assert runner.is_alive() and not raised  # still waiting for the job in flight
    gate.set()
    runner.join(60)
    assert [str(e) for e in raised] == ["evaluator broke"] and finished == ["slow"]  # no third job started

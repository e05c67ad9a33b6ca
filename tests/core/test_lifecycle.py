"""The lifecycle table: every (phase, trigger) pair, and the shape of the graph it draws."""

from __future__ import annotations

import itertools

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from faktory_core import (
    EXIT_ABORTED,
    EXIT_CLEAN,
    PHASES,
    LocalProtocolError,
    Phase,
    Trigger,
    WorkerConfig,
)
from faktory_core._lifecycle import LIFECYCLE, PhaseRules, next_phase
from faktory_core.commands import WorkerState
from faktory_core.machine_io import PhaseChanged

ALL_PAIRS = list(itertools.product(Phase, Trigger))
#: The order phases are declared in is the order a worker lives them.
RANK = {phase: rank for rank, phase in enumerate(Phase)}
#: Inputs that can arrive at any moment: signals, API calls, BEAT replies, the caller's
#: interruption, the server's refusal.
REQUESTS = (
    Trigger.QUIET,
    Trigger.SERVER_QUIET,
    Trigger.STOP,
    Trigger.SERVER_TERMINATE,
    Trigger.ABORT,
    Trigger.REFUSED,
)
#: What moves each phase on when nothing but time passes (the worker's timer triggers).
TIMER_TRIGGER = {
    phase: rules.on_timeout for phase, rules in PHASES.items() if rules.on_timeout is not None
}


def pair_id(pair: tuple[Phase, Trigger]) -> str:
    return f"{pair[0].name}-{pair[1].name}"


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=pair_id)
def test_every_pair_follows_the_table_or_is_a_local_error(pair: tuple[Phase, Trigger]) -> None:
    phase, trigger = pair
    if pair in LIFECYCLE:
        assert next_phase(phase, trigger) is LIFECYCLE[pair]
    else:
        with pytest.raises(LocalProtocolError) as caught:
            next_phase(phase, trigger)
        assert trigger.value in str(caught.value)
        assert phase.value in str(caught.value)
        assert caught.value.__cause__ is None  # the KeyError is not chained


def test_the_table_has_only_phases_and_triggers() -> None:
    for (phase, trigger), after in LIFECYCLE.items():
        assert isinstance(phase, Phase)
        assert isinstance(trigger, Trigger)
        assert isinstance(after, Phase)


def test_phases_only_move_forward() -> None:
    for (phase, trigger), after in LIFECYCLE.items():
        assert RANK[after] >= RANK[phase], f"{phase.name} --{trigger.name}--> {after.name}"


def test_rank_order_is_the_life_order() -> None:
    assert list(Phase) == [
        Phase.RUNNING,
        Phase.QUIET,
        Phase.DRAINING,
        Phase.STOPPING,
        Phase.ABORTING,
        Phase.ENDING,
        Phase.EXITED,
    ]


@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: p.name)
@pytest.mark.parametrize("request_", REQUESTS, ids=lambda t: t.name)
def test_requests_are_accepted_in_every_phase(phase: Phase, request_: Trigger) -> None:
    """Signals and BEAT replies can come at any time: none of them may be a protocol error."""
    assert (phase, request_) in LIFECYCLE


@pytest.mark.parametrize("trigger", [Trigger.QUIET, Trigger.SERVER_QUIET], ids=lambda t: t.name)
def test_quiet_is_one_way(trigger: Trigger) -> None:
    assert next_phase(Phase.RUNNING, trigger) is Phase.QUIET
    for phase in Phase:
        if phase is not Phase.RUNNING:
            assert next_phase(phase, trigger) is phase, "quiet again changes nothing"
    # Nothing leads back to RUNNING, and nothing but quiet or stop leaves it.
    assert all(
        after is not Phase.RUNNING
        for (phase, _), after in LIFECYCLE.items()
        if phase is not Phase.RUNNING
    )
    assert {t for (p, t) in LIFECYCLE if p is Phase.RUNNING} == {*REQUESTS, Trigger.QUEUES_EMPTY}


def test_a_stop_in_running_or_quiet_starts_the_shutdown_timeout() -> None:
    for phase in (Phase.RUNNING, Phase.QUIET):
        assert next_phase(phase, Trigger.STOP) is Phase.STOPPING
        assert next_phase(phase, Trigger.SERVER_TERMINATE) is Phase.STOPPING


def test_a_second_stop_aborts_but_a_repeated_server_terminate_does_not() -> None:
    assert next_phase(Phase.STOPPING, Trigger.STOP) is Phase.ABORTING
    assert next_phase(Phase.STOPPING, Trigger.SERVER_TERMINATE) is Phase.STOPPING


def test_an_interrupted_caller_aborts_from_every_phase_before_aborting() -> None:
    for phase in (Phase.RUNNING, Phase.QUIET, Phase.DRAINING, Phase.STOPPING):
        assert next_phase(phase, Trigger.ABORT) is Phase.ABORTING
    for phase in (Phase.ABORTING, Phase.ENDING, Phase.EXITED):
        assert next_phase(phase, Trigger.ABORT) is phase


def test_a_refusal_stops_gracefully_and_never_hurries_a_later_phase() -> None:
    for phase in (Phase.RUNNING, Phase.QUIET, Phase.DRAINING, Phase.STOPPING):
        assert next_phase(phase, Trigger.REFUSED) is Phase.STOPPING
    for phase in (Phase.ABORTING, Phase.ENDING, Phase.EXITED):
        assert next_phase(phase, Trigger.REFUSED) is phase


def test_ending_ends_when_every_connection_ended_or_at_its_timeout() -> None:
    assert next_phase(Phase.ENDING, Trigger.ENDED) is Phase.EXITED
    assert next_phase(Phase.ENDING, Trigger.END_TIMEOUT) is Phase.EXITED
    assert {p for (p, t) in LIFECYCLE if t in (Trigger.ENDED, Trigger.END_TIMEOUT)} == {
        Phase.ENDING
    }


def test_draining_skips_the_abort() -> None:
    assert next_phase(Phase.STOPPING, Trigger.DRAINED) is Phase.ENDING
    assert next_phase(Phase.ABORTING, Trigger.DRAINED) is Phase.ENDING


def test_exited_is_final() -> None:
    assert {after for (phase, _), after in LIFECYCLE.items() if phase is Phase.EXITED} == {
        Phase.EXITED
    }


@pytest.mark.parametrize("phase", [p for p in Phase if p is not Phase.EXITED], ids=lambda p: p.name)
def test_a_stop_and_the_passing_of_time_reach_exited(phase: Phase) -> None:
    """One stop request, then only timer triggers: no job has to cooperate for the exit."""
    visited = [phase]
    while phase is not Phase.EXITED:
        trigger = TIMER_TRIGGER.get(phase, Trigger.STOP)
        phase = next_phase(phase, trigger)
        visited.append(phase)
        assert len(visited) <= len(Phase), visited
    assert [RANK[p] for p in visited] == sorted(RANK[p] for p in visited)


@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: p.name)
def test_every_phase_is_reachable_from_running(phase: Phase) -> None:
    reached = {Phase.RUNNING}
    frontier = [Phase.RUNNING]
    while frontier:
        current = frontier.pop()
        for (source, _), after in LIFECYCLE.items():
            if source is current and after not in reached:
                reached.add(after)
                frontier.append(after)
    assert phase in reached


def test_timer_triggers_only_where_a_timer_runs() -> None:
    """The worker fires a timer trigger only in the phase that set its deadline (entering any
    phase resets it), so a late or second one cannot reach a phase that lacks the pair."""
    for trigger in (Trigger.DEADLINE, Trigger.GRACE_OVER, Trigger.END_TIMEOUT):
        phases = {phase for (phase, t) in LIFECYCLE if t is trigger}
        assert phases == {p for p, t in TIMER_TRIGGER.items() if t is trigger}
    assert {p for (p, t) in LIFECYCLE if t is Trigger.DRAINED} == {
        Phase.DRAINING,
        Phase.STOPPING,
        Phase.ABORTING,
    }


def test_burst_drains_without_a_timeout_and_a_stop_still_applies() -> None:
    for phase in (Phase.RUNNING, Phase.QUIET):
        assert next_phase(phase, Trigger.QUEUES_EMPTY) is Phase.DRAINING
    assert next_phase(Phase.DRAINING, Trigger.DRAINED) is Phase.ENDING
    assert next_phase(Phase.DRAINING, Trigger.STOP) is Phase.STOPPING
    assert next_phase(Phase.DRAINING, Trigger.SERVER_TERMINATE) is Phase.STOPPING
    # A FETCH in flight may come back empty in any later phase: nothing changes then.
    for phase in (Phase.STOPPING, Phase.ABORTING, Phase.ENDING):
        assert next_phase(phase, Trigger.QUEUES_EMPTY) is phase


def test_exit_codes() -> None:
    assert (EXIT_CLEAN, EXIT_ABORTED) == (0, 1)


def test_members_hash_by_identity() -> None:
    assert hash(Phase.RUNNING) == object.__hash__(Phase.RUNNING)
    assert hash(Trigger.STOP) == object.__hash__(Trigger.STOP)


def test_exactly_the_changes_out_of_running_stop_fetching() -> None:
    for (phase, trigger), after in LIFECYCLE.items():
        if after is not phase:
            change = PhaseChanged(previous=phase, phase=after, trigger=trigger)
            assert change.stops_fetching is (phase is Phase.RUNNING)
    # Phases only move forward, so a run leaves RUNNING, and runs the quiet hooks, once.
    assert all(after is not Phase.RUNNING for after in LIFECYCLE.values())


# -- PHASES: what each phase does -------------------------------------------------------------

STATE_RANK = {WorkerState.RUNNING: 0, WorkerState.QUIET: 1, WorkerState.TERMINATE: 2}


def test_every_phase_has_its_rules() -> None:
    assert list(PHASES) == list(Phase)
    assert all(isinstance(rules, PhaseRules) for rules in PHASES.values())


def test_the_timer_triggers_are_those_of_the_shutdown_contract() -> None:
    assert {phase: (r.timeout, r.on_timeout) for phase, r in PHASES.items() if r.timeout} == {
        Phase.STOPPING: ("shutdown_timeout", Trigger.DEADLINE),
        Phase.ABORTING: ("abort_grace", Trigger.GRACE_OVER),
        Phase.ENDING: ("reply_timeout", Trigger.END_TIMEOUT),
    }


@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: p.name)
def test_a_timeout_names_a_worker_setting_and_its_trigger_moves_on(phase: Phase) -> None:
    rules = PHASES[phase]
    config = WorkerConfig(wid="w", shutdown_timeout=7.0, abort_grace=2.0, reply_timeout=9.0)
    if rules.timeout is None:
        assert rules.on_timeout is None
        assert rules.deadline(config, 100.0) is None
        return
    assert rules.timeout in attrs.fields_dict(WorkerConfig)
    assert rules.deadline(config, 100.0) == 100.0 + getattr(config, rules.timeout)
    assert rules.on_timeout is not None
    assert next_phase(phase, rules.on_timeout) is not phase


def test_a_timeout_and_its_trigger_go_together() -> None:
    with pytest.raises(LocalProtocolError):
        PhaseRules(fetches=False, starts_fetched_jobs=True, reported=WorkerState.QUIET, timeout="x")
    with pytest.raises(LocalProtocolError):
        PhaseRules(
            fetches=False,
            starts_fetched_jobs=True,
            reported=WorkerState.QUIET,
            on_timeout=Trigger.DEADLINE,
        )


@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: p.name)
def test_a_phase_that_ends_when_drained_takes_drained(phase: Phase) -> None:
    assert PHASES[phase].ends_when_drained is ((phase, Trigger.DRAINED) in LIFECYCLE)


def test_only_running_fetches() -> None:
    assert [phase for phase, rules in PHASES.items() if rules.fetches] == [Phase.RUNNING]


def test_late_jobs_are_failed_from_aborting_on() -> None:
    """A job fetched after the abort began would only be aborted: it is FAILed unstarted."""
    refused = [phase for phase, rules in PHASES.items() if not rules.starts_fetched_jobs]
    assert refused == [Phase.ABORTING, Phase.ENDING, Phase.EXITED]


def test_beat_reports_quiet_once_fetching_stops_and_terminate_once_stopping() -> None:
    assert {phase: rules.reported for phase, rules in PHASES.items()} == {
        Phase.RUNNING: WorkerState.RUNNING,
        Phase.QUIET: WorkerState.QUIET,
        Phase.DRAINING: WorkerState.QUIET,
        Phase.STOPPING: WorkerState.TERMINATE,
        Phase.ABORTING: WorkerState.TERMINATE,
        Phase.ENDING: WorkerState.TERMINATE,
        Phase.EXITED: WorkerState.TERMINATE,
    }
    for phase, rules in PHASES.items():
        assert (rules.reported is WorkerState.RUNNING) is rules.fetches, phase


@given(st.lists(st.sampled_from(list(Trigger)), max_size=30))
def test_a_phase_never_gives_back_what_an_earlier_one_stopped(triggers: list[Trigger]) -> None:
    """Along any path through LIFECYCLE, fetching, starting fetched jobs and the state BEAT
    reports only move one way, as the server's own worker state does."""
    phase = Phase.RUNNING
    for trigger in triggers:
        after = LIFECYCLE.get((phase, trigger))
        if after is None:
            continue
        before, now = PHASES[phase], PHASES[after]
        assert now.fetches <= before.fetches
        assert now.starts_fetched_jobs <= before.starts_fetched_jobs
        assert STATE_RANK[now.reported] >= STATE_RANK[before.reported]
        change = PhaseChanged(previous=phase, phase=after, trigger=trigger)
        assert change.stops_fetching is (before.fetches and not now.fetches)
        # Spelled out, not derived from PHASES: only leaving RUNNING stops the fetching.
        assert change.stops_fetching is (phase is Phase.RUNNING and after is not Phase.RUNNING)
        phase = after

"""The link-status table: every (status, input) pair, the shape of its graph, and a link
moved only through it."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faktory_core import LocalProtocolError
from faktory_core._links import LINK_TRANSITIONS, Link, LinkInput, LinkStatus, next_link_status

ALL_PAIRS = list(itertools.product(LinkStatus, LinkInput))


def pair_id(pair: tuple[LinkStatus, LinkInput]) -> str:
    return f"{pair[0].name}-{pair[1].name}"


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=pair_id)
def test_every_pair_follows_the_table_or_is_a_local_error(
    pair: tuple[LinkStatus, LinkInput],
) -> None:
    status, link_input = pair
    if pair in LINK_TRANSITIONS:
        assert next_link_status(status, link_input) is LINK_TRANSITIONS[pair]
    else:
        with pytest.raises(LocalProtocolError) as caught:
            next_link_status(status, link_input)
        assert link_input.value in str(caught.value)
        assert status.value in str(caught.value)
        assert caught.value.__cause__ is None


def test_the_table_has_only_statuses_and_inputs() -> None:
    for (status, link_input), after in LINK_TRANSITIONS.items():
        assert isinstance(status, LinkStatus)
        assert isinstance(link_input, LinkInput)
        assert isinstance(after, LinkStatus)


def test_every_input_changes_the_status() -> None:
    """No self-loops: a stale input (a connect that finished after the link was given up) is
    ignored before it reaches the table."""
    assert all(after is not status for (status, _), after in LINK_TRANSITIONS.items())


def test_closed_is_final_and_every_other_status_can_be_given_up() -> None:
    assert not [pair for pair in LINK_TRANSITIONS if pair[0] is LinkStatus.CLOSED]
    for status in LinkStatus:
        if status is not LinkStatus.CLOSED:
            assert next_link_status(status, LinkInput.GIVE_UP) is LinkStatus.CLOSED


def test_the_life_of_a_link() -> None:
    status = LinkStatus.DOWN
    for link_input, expected in [
        (LinkInput.CONNECT, LinkStatus.CONNECTING),
        (LinkInput.CONNECTED, LinkStatus.HANDSHAKING),
        (LinkInput.ACCEPTED, LinkStatus.READY),
        (LinkInput.LOST, LinkStatus.DOWN),
        (LinkInput.CONNECT, LinkStatus.CONNECTING),
        (LinkInput.LOST, LinkStatus.DOWN),
        (LinkInput.CONNECT, LinkStatus.CONNECTING),
        (LinkInput.CONNECTED, LinkStatus.HANDSHAKING),
        (LinkInput.LOST, LinkStatus.DOWN),
        (LinkInput.CONNECT, LinkStatus.CONNECTING),
        (LinkInput.CONNECTED, LinkStatus.HANDSHAKING),
        (LinkInput.ACCEPTED, LinkStatus.READY),
        (LinkInput.END, LinkStatus.CLOSED),
    ]:
        status = next_link_status(status, link_input)
        assert status is expected, link_input


def test_only_a_ready_link_sends_end() -> None:
    assert {s for (s, i) in LINK_TRANSITIONS if i is LinkInput.END} == {LinkStatus.READY}


@pytest.mark.parametrize("status", list(LinkStatus), ids=lambda s: s.name)
def test_every_status_is_reachable_from_down_and_reaches_closed(status: LinkStatus) -> None:
    def reachable(start: LinkStatus) -> set[LinkStatus]:
        reached, frontier = {start}, [start]
        while frontier:
            current = frontier.pop()
            for (source, _), after in LINK_TRANSITIONS.items():
                if source is current and after not in reached:
                    reached.add(after)
                    frontier.append(after)
        return reached

    assert status in reachable(LinkStatus.DOWN)
    assert LinkStatus.CLOSED in reachable(status)


@given(st.lists(st.sampled_from(list(LinkInput)), max_size=40))
def test_a_link_moves_only_through_the_table(inputs: list[LinkInput]) -> None:
    link = Link(id=0)
    assert link.status is LinkStatus.DOWN
    for link_input in inputs:
        before = link.status
        expected = LINK_TRANSITIONS.get((before, link_input))
        if expected is None:
            with pytest.raises(LocalProtocolError):
                link.move(link_input)
            assert link.status is before  # a refused input changes nothing
        else:
            link.move(link_input)
            assert link.status is expected


def test_a_link_status_is_not_assigned_directly() -> None:
    link = Link(id=0)
    with pytest.raises(AttributeError):
        link.status = LinkStatus.READY  # type: ignore[misc]
    assert Link(id=1, status=LinkStatus.READY).status is LinkStatus.READY


def test_members_hash_by_identity() -> None:
    assert hash(LinkStatus.DOWN) == object.__hash__(LinkStatus.DOWN)
    assert hash(LinkInput.LOST) == object.__hash__(LinkInput.LOST)

"""The referral model alone: state table, where up and down may go, the green-channel default."""

from __future__ import annotations

import pytest

from teleconsult.domain.consults import Urgency
from teleconsult.domain.referrals import (
    Direction,
    InvalidReferralError,
    ReferralAction,
    ReferralStateError,
    ReferralStatus,
    ancestors,
    check_target_organisation,
    check_text,
    default_green_channel,
    next_status,
)

TREE = {"COUNTY": None, "TOWN01": "COUNTY", "TOWN02": "COUNTY", "VILLAGE21": "TOWN02", "CITY": None}

S = ReferralStatus
ALLOWED = {
    (S.ISSUED, ReferralAction.ACCEPT): S.ACCEPTED,
    (S.ISSUED, ReferralAction.DECLINE): S.DECLINED,
    (S.ISSUED, ReferralAction.CANCEL): S.CANCELLED,
    (S.ACCEPTED, ReferralAction.CANCEL): S.CANCELLED,
    (S.ACCEPTED, ReferralAction.COMPLETE): S.COMPLETED,
}
MOVES = [ReferralAction.ACCEPT, ReferralAction.DECLINE, ReferralAction.CANCEL, ReferralAction.COMPLETE]


@pytest.mark.parametrize("current", list(ReferralStatus))
@pytest.mark.parametrize("action", MOVES)
def test_the_state_table(current: ReferralStatus, action: ReferralAction) -> None:
    expected = ALLOWED.get((current, action))
    if expected is None:
        with pytest.raises(ReferralStateError, match=f"r1 is {current.value}; it can be"):
            next_status("r1", current, action)
    else:
        assert next_status("r1", current.value, action.value) is expected


def test_closed_referrals_never_move_and_issuing_is_not_a_move() -> None:
    for closed in (S.COMPLETED, S.DECLINED, S.CANCELLED):
        for action in MOVES:
            with pytest.raises(ReferralStateError):
                next_status("r1", closed, action)
    with pytest.raises(ValueError, match="issued once"):
        next_status("r1", S.ISSUED, ReferralAction.ISSUE)
    with pytest.raises(ValueError, match="'lost'"):
        next_status("r1", "lost", ReferralAction.ACCEPT)


def test_ancestors_walk_up_and_stop_on_a_cycle() -> None:
    assert ancestors("VILLAGE21", TREE) == ("TOWN02", "COUNTY")
    assert ancestors("COUNTY", TREE) == ()
    assert ancestors("UNKNOWN", TREE) == ()
    assert ancestors("A", {"A": "B", "B": "A"}) == ("B",)


def _check(
    direction: Direction,
    target: str,
    *,
    patient: str = "TOWN01",
    requester: str = "TOWN01",
    issuer: str = "COUNTY",
) -> str:
    return check_target_organisation(
        direction,
        target,
        tree=TREE,
        patient_organisation=patient,
        requesting_organisation=requester,
        issuing_organisation=issuer,
    )


@pytest.mark.parametrize(
    ("direction", "target", "patient", "requester", "issuer", "allowed"),
    [
        (Direction.UP, "COUNTY", "TOWN01", "TOWN01", "COUNTY", True),
        (Direction.UP, "TOWN02", "VILLAGE21", "VILLAGE21", "COUNTY", True),
        (Direction.UP, "COUNTY", "VILLAGE21", "VILLAGE21", "COUNTY", True),
        (Direction.UP, "TOWN01", "TOWN01", "TOWN01", "COUNTY", False),  # the patient's own
        (Direction.UP, "TOWN02", "TOWN01", "TOWN01", "COUNTY", False),  # a sibling
        (Direction.UP, "CITY", "TOWN01", "TOWN01", "CITY", False),  # another tree
        (Direction.UP, "COUNTY", "COUNTY", "COUNTY", "COUNTY", False),  # nothing above
        (Direction.DOWN, "TOWN01", "TOWN01", "TOWN01", "COUNTY", True),
        (Direction.DOWN, "VILLAGE21", "VILLAGE21", "TOWN02", "COUNTY", True),
        (Direction.DOWN, "TOWN02", "VILLAGE21", "TOWN02", "COUNTY", True),
        (Direction.DOWN, "TOWN02", "VILLAGE21", "VILLAGE21", "COUNTY", False),  # above the requester
        (Direction.DOWN, "TOWN02", "TOWN01", "TOWN01", "COUNTY", False),  # another township
        (Direction.DOWN, "TOWN01", "TOWN01", "COUNTY", "COUNTY", True),  # a county doctor asked
        (Direction.DOWN, "COUNTY", "TOWN01", "COUNTY", "COUNTY", False),  # the issuer's own level
        (Direction.DOWN, "COUNTY", "TOWN01", "COUNTY", "CITY", True),  # the city sends back to the county
        (Direction.DOWN, "TOWN02", "VILLAGE21", "TOWN02", "TOWN02", False),  # not below the issuer
        (Direction.DOWN, "NOWHERE", "TOWN01", "TOWN01", "COUNTY", False),
    ],
)
def test_where_up_and_down_may_go(
    direction: Direction, target: str, patient: str, requester: str, issuer: str, allowed: bool
) -> None:
    if allowed:
        assert _check(direction, target, patient=patient, requester=requester, issuer=issuer) == target
    else:
        with pytest.raises(InvalidReferralError):
            _check(direction, target, patient=patient, requester=requester, issuer=issuer)


def test_refusals_say_where_it_may_go() -> None:
    with pytest.raises(InvalidReferralError, match=r"above the patient's \(VILLAGE21: TOWN02, COUNTY\)"):
        _check(Direction.UP, "TOWN01", patient="VILLAGE21", requester="VILLAGE21")
    with pytest.raises(InvalidReferralError, match="COUNTY: none: it is at the top of its tree"):
        _check(Direction.UP, "CITY", patient="COUNTY")


@pytest.mark.parametrize("urgency", list(Urgency))
def test_green_channel_by_default_for_critical_and_stat_up_referrals(urgency: Urgency) -> None:
    assert default_green_channel(Direction.UP, urgency) is (urgency in (Urgency.CRITICAL, Urgency.STAT))
    assert default_green_channel(Direction.DOWN, urgency) is False


def test_texts() -> None:
    assert check_text("  急诊PCI  \n", "note", 10, required=True) == "急诊PCI"
    assert check_text(" ", "note", 10, required=False) is None
    assert check_text(None, "note", 10, required=False) is None
    with pytest.raises(InvalidReferralError, match="note is required"):
        check_text("\n\t", "note", 10, required=True)
    with pytest.raises(InvalidReferralError, match="at most 3 characters"):
        check_text("abcd", "note", 3, required=True)

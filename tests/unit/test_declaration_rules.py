"""Law 65-00 article 5's age limits on a declared child (ledger/coverage/declarations.py), as a
pure rule: refused exactly when the child's age in completed years on the effective date is over
21, over 26 with a school certificate, never with a disability card."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import limits
from ledger.coverage.declarations import check_child_age
from ledger.errors import FailedPrecondition
from ledger.v1 import events_pb2

KINDS = st.sets(
    st.sampled_from(
        [
            events_pb2.DOCUMENT_KIND_BIRTH_CERTIFICATE,
            events_pb2.DOCUMENT_KIND_FAMILY_BOOKLET,
            events_pb2.DOCUMENT_KIND_SCHOOL_CERTIFICATE,
            events_pb2.DOCUMENT_KIND_DISABILITY_CARD,
        ]
    ),
    min_size=1,
)


def _age(birth: dt.date, day: dt.date) -> int:
    """Completed years, counted by adding years to the birth date (29 February: 1 March)."""
    years = day.year - birth.year
    try:
        anniversary = birth.replace(year=day.year)
    except ValueError:  # born on 29 February, in a common year
        anniversary = dt.date(day.year, 3, 1)
    return years if day >= anniversary else years - 1


@given(
    birth=st.dates(dt.date(1950, 1, 1), dt.date(2026, 12, 31)),
    effective=st.dates(dt.date(2000, 1, 1), dt.date(2030, 12, 31)),
    kinds=KINDS,
)
def test_a_child_is_refused_exactly_when_over_the_limit_its_documents_set(
    birth: dt.date, effective: dt.date, kinds: set[int]
) -> None:
    if events_pb2.DOCUMENT_KIND_DISABILITY_CARD in kinds:
        limit = None
    elif events_pb2.DOCUMENT_KIND_SCHOOL_CERTIFICATE in kinds:
        limit = limits.declared_child_in_education_age_max_years
    else:
        limit = limits.declared_child_age_max_years
    if limit is not None and _age(birth, effective) > limit:
        with pytest.raises(FailedPrecondition) as raised:
            check_child_age(birth, effective, kinds, "beneficiaries[0]")
        assert raised.value.reason == "CHILD_OVER_AGE"
    else:
        check_child_age(birth, effective, kinds, "beneficiaries[0]")


def test_the_boundary_days() -> None:
    birth = dt.date(2004, 7, 1)
    birth_only = {events_pb2.DOCUMENT_KIND_BIRTH_CERTIFICATE}
    check_child_age(birth, dt.date(2026, 6, 30), birth_only, "f")  # 21 until the 22nd birthday
    with pytest.raises(FailedPrecondition):
        check_child_age(birth, dt.date(2026, 7, 1), birth_only, "f")  # 22 that day

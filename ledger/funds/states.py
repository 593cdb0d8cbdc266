"""The 18 states (wilayat) of Sudan, from ``data/sd_states.json`` (ISO 3166-2:SD; the file
names its source). A cohort beneficiary's ``state_code`` must be one of them."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, cast

__all__ = ["STATES_SOURCE", "sudan_states"]


@cache
def _load() -> dict[str, Any]:
    text = resources.files("ledger.funds").joinpath("data/sd_states.json").read_text("utf-8")
    return cast(dict[str, Any], json.loads(text))


def sudan_states() -> MappingProxyType[str, str]:
    """ISO 3166-2:SD code -> English name, for the 18 states."""
    return MappingProxyType({row["code"]: row["name"] for row in _load()["states"]})


STATES_SOURCE: str = _load()["source"]
"""Where the list comes from (shown in docs/funds.md)."""

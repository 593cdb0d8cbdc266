"""Every entry-point group the code loads is registered in pyproject.toml, and each installed
entry point resolves to the object meant.

A missing or misspelt registration fails quietly elsewhere: without ``place_receiver`` every
``serve --workers N`` process listens for gateway notifications, without ``payments.recording``
the sequencer process cannot run the hook that marks a payment recorded, without a CLI command
it is simply absent. Here each group is listed with what it must hold, read from the installed
metadata (``importlib.metadata``, what the loaders read: a venv installed before a registration
was added lacks it, and ``make install`` reinstalls when pyproject.toml changes). A group the
code starts loading without being listed here fails the first test.
"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

import pytest

import clients.audit_cli
import clients.cli_cards
import clients.cli_certificate
import clients.cli_fund
import clients.cli_portal
import clients.cli_proof
import clients.witness.cli
import payments.cli
import payments.gateways.cmi
import payments.gateways.direct
import payments.gateways.knet
import payments.gateways.simulated
import payments.migrations
import payments.notifications
import payments.recording
import payments.refunds
import payments.service
from ledger.rpc.server import EXTENSION_GROUP
from ledger.rpc.supervisor import CHILD_ENVIRONMENTS_GROUP
from ledger.storage.append_hooks import (
    APPEND_HOOKS_GROUP,
    append_hook_registered,
    load_append_hooks,
)
from ledger.storage.migrate import MIGRATIONS_GROUP, version_locations
from payments.gateway import ENTRY_POINT_GROUP, PaymentGateway, load_gateway
from payments.recording import MARK_RECORDED
from payments.refunds import MARK_REFUND_RECORDED
from policy_ledger.cli import CLI_COMMANDS_GROUP

ROOT = Path(__file__).resolve().parents[2]

EXPECTED: dict[str, dict[str, object]] = {
    EXTENSION_GROUP: {"payments": payments.service.install},
    CHILD_ENVIRONMENTS_GROUP: {"payments": payments.notifications.place_receiver},
    APPEND_HOOKS_GROUP: {"payments": payments.recording, "payments_refunds": payments.refunds},
    MIGRATIONS_GROUP: {"payments": payments.migrations.version_location},
    ENTRY_POINT_GROUP: {
        "simulated": payments.gateways.simulated.from_settings,
        "knet": payments.gateways.knet.from_settings,
        "direct": payments.gateways.direct.from_settings,
        "cmi": payments.gateways.cmi.from_settings,
    },
    CLI_COMMANDS_GROUP: {
        "payments": payments.cli.register,
        "audit": clients.audit_cli.register,
        "proof": clients.cli_proof.register,
        "certificate": clients.cli_certificate.register,
        "portal": clients.cli_portal.register,
        "witness": clients.witness.cli.register,
        "card": clients.cli_cards.register,
        "fund": clients.cli_fund.register,
    },
}
"""Each group the code loads, by the constant the loader uses, and what each name must be."""

GROUP_CONSTANTS = {
    "EXTENSION_GROUP": "policy_ledger.server_extensions",  # ledger/rpc/server.py
    "CHILD_ENVIRONMENTS_GROUP": "policy_ledger.child_environments",  # ledger/rpc/supervisor.py
    "APPEND_HOOKS_GROUP": "policy_ledger.append_hooks",  # ledger/storage/append_hooks.py
    "MIGRATIONS_GROUP": "policy_ledger.migrations",  # ledger/storage/migrate.py
    "ENTRY_POINT_GROUP": "policy_ledger.payment_gateways",  # payments/gateway.py
    "CLI_COMMANDS_GROUP": "policy_ledger.cli_commands",  # policy_ledger/cli.py
}
_LOADS = re.compile(r"entry_points\(group=([A-Z_]+)\)")


def test_every_group_the_code_loads_is_listed_here() -> None:
    """The groups named in the code's ``entry_points(group=...)`` calls are those above, with
    the names pyproject.toml registers them under."""
    loaded = {
        constant
        for package in ("ledger", "payments", "clients", "policy_ledger", "bench")
        for path in (ROOT / package).rglob("*.py")
        for constant in _LOADS.findall(path.read_text(encoding="utf-8"))
    }
    assert loaded == set(GROUP_CONSTANTS)
    assert set(EXPECTED) == set(GROUP_CONSTANTS.values())
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    groups = declared["project"]["entry-points"]
    assert {group for group in groups if group.startswith("policy_ledger.")} == set(EXPECTED)
    assert {group: set(groups[group]) for group in EXPECTED} == {
        group: set(names) for group, names in EXPECTED.items()
    }


@pytest.mark.parametrize("group", sorted(EXPECTED))
def test_each_installed_entry_point_resolves_to_the_object_meant(group: str) -> None:
    installed = {point.name: point for point in entry_points(group=group)}
    assert set(installed) == set(EXPECTED[group]), "reinstall (make install) after editing"
    for name, meant in EXPECTED[group].items():
        loaded = installed[name].load()
        assert loaded is meant, (group, name, loaded)
        if not isinstance(meant, ModuleType):
            assert callable(loaded), (group, name)


def test_the_loaders_find_what_the_entry_points_name() -> None:
    """Past resolving: each loader's own result shows the registration at work."""
    assert Path(payments.migrations.version_location()) in version_locations()
    load_append_hooks()
    assert append_hook_registered(MARK_RECORDED)
    assert append_hook_registered(MARK_REFUND_RECORDED)
    assert isinstance(load_gateway("simulated", {}), PaymentGateway)
    with pytest.raises(LookupError, match="registered: cmi, direct, knet, simulated"):
        load_gateway("absent", {})

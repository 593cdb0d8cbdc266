"""The ``policy-ledger`` command line: serve, keygen, db, admin, rebuild, demo, and the command
groups other packages register (entry-point group ``policy_ledger.cli_commands``): audit, proof,
certificate, insurer, coverage, renew (clients) and payments.

Examples:
  policy-ledger keygen --name policy-ledger.example/log --out var/log.key
  policy-ledger pki init --out var/pki
  policy-ledger serve --listen 127.0.0.1:50051 --tls-cert var/pki/server.pem \
      --tls-key var/pki/server.key --client-ca var/pki/ca.pem \
      --operator-verifier @var/operator.key.pub
  policy-ledger admin insurer add-key --insurer acme-health --verifier-key-file acme.pub \
      --server 127.0.0.1:50051 --credentials var/pki --as operator-operator \
      --operator-key var/operator.key --log-verifier @var/log.key.pub
  policy-ledger admin insurer list
  policy-ledger demo

Placeholders: the examples of every command's --help run as printed in a folder where
`policy-ledger pki init --out var/pki` and `keygen` made var/; replace only `127.0.0.1:50051`
(your server's address), `127.0.0.1:50052` (its --enrol-listen port), `127.0.0.1:8380` (a
witness's address), `CODE` (the code `enrol issue` printed), `ed25519:0123abcd4567ef89` (a key
id `admin insurer list` shows), `policy-ledger.example/log+1234abcd+AQ...` (your log's verifier
key, var/log.key.pub), `postgresql+psycopg://ledger@db/ledger` (your database's URL) and
`pt_abcdefghijklmnopqrstuvwxyz` (the person token `enrol issue --person` printed).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from clients.errors import ClientError
from ledger import limits
from ledger.cli_flags import (
    PERSON_FORM,
    add_log_key_file,
    add_log_verifier,
    person_argument,
    person_text,
)
from ledger.config import LOG_FORMATS, ServerConfig, check_workers
from ledger.errors import LedgerError
from ledger.keys import insurer_key_id
from ledger.sequencer import SequencerOptions
from ledger.signing import generate_keypair, parse_signer_key, parse_verifier_key
from ledger.storage.db import POOL_SHARE_ENVIRONMENT, create_ledger_engine
from ledger.storage.key_store import KeyStore
from ledger.storage.migrate import upgrade
from policy_ledger.cli_enrol import (
    add_enrol_commands,
    add_enrol_serve_options,
    apply_enrol_serve_options,
)
from policy_ledger.cli_grants import add_beneficiary_commands

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    from ledger.metrics import configure_logging

    config = _server_config(args)
    configure_logging(config.log_format)
    if config.workers:
        return asyncio.run(_serve_workers(config, args.port_file))
    # The one process's pool is the configured totals; its engines read their share from the
    # environment, as the processes of `serve --workers N` do (ledger.storage.db).
    (share,) = config.database_pool_shares()
    os.environ[POOL_SHARE_ENVIRONMENT] = str(share)
    asyncio.run(_serve_one_process(config, args.port_file))
    return 0


async def _serve_one_process(config: ServerConfig, port_file: str | None) -> None:
    """``serve --workers 0``: admission, reads and the sequencer in this one process."""
    from ledger.rpc.server import start_server

    try:
        running = await start_server(config)
    except RuntimeError as error:
        if "Failed to bind" not in str(error):
            raise
        raise AddressInUse(
            f"cannot listen on {config.listen}: the address is in use by another process "
            "(or not available here); stop it or choose another --listen"
        ) from None
    metrics_port = (
        running.metrics.endpoint.port
        if running.metrics is not None and running.metrics.endpoint is not None
        else None
    )
    verify_port = running.verify_page.port if running.verify_page is not None else None
    _print_serving(running.port, running.origin, metrics_port, verify_port, port_file)
    await _until_stopped()
    await running.stop()
    print("policy-ledger stopped cleanly", flush=True)


async def _serve_workers(config: ServerConfig, port_file: str | None) -> int:
    """``serve --workers N``: this process supervises a sequencer process and N workers
    (ledger.rpc.supervisor); 1 when it gave up restarting one that kept dying."""
    from ledger.rpc.supervisor import start_supervisor

    supervisor = await start_supervisor(config)
    verify_port = supervisor.verify_page.port if supervisor.verify_page is not None else None
    _print_serving(
        supervisor.port, supervisor.origin, supervisor.metrics_port, verify_port, port_file
    )
    pids = ", ".join(f"{name} pid {pid}" for name, pid in supervisor.pids.items())
    print(f"processes: {pids}", flush=True)
    stopped = asyncio.ensure_future(_until_stopped())
    gave_up = asyncio.ensure_future(supervisor.gave_up.wait())
    await asyncio.wait((stopped, gave_up), return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    gave_up.cancel()
    await supervisor.stop()
    if supervisor.why:
        print(f"error: {supervisor.why}; every process is stopped", file=sys.stderr, flush=True)
        return 1
    print("policy-ledger stopped cleanly", flush=True)
    return 0


def _print_serving(
    port: int, origin: str, metrics_port: int | None, verify_port: int | None, port_file: str | None
) -> None:
    if port_file:
        Path(port_file).write_text(f"{port}\n", encoding="utf-8")
    print(f"policy-ledger serving on port {port}, origin {origin}", flush=True)
    if metrics_port is not None:
        print(f"metrics on port {metrics_port}", flush=True)
    if verify_port is not None:
        print(f"verification page on port {verify_port}", flush=True)


async def _until_stopped() -> None:
    """Return at SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def _port_number(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0..65535)")
    return int(text)


def _entries_count(text: str) -> int:
    if not text.isdigit() or int(text) >= 2**63:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of entries (0 or more)")
    return int(text)


class AddressInUse(OSError):
    """``serve`` could not listen where it was told to."""


def _server_config(args: argparse.Namespace) -> ServerConfig:
    config = ServerConfig.from_environment()
    config = apply_enrol_serve_options(args, config)
    return dataclasses.replace(
        config,
        database_url=args.database or config.database_url,
        listen=args.listen or config.listen,
        log_key_path=Path(args.log_key_file) if args.log_key_file else config.log_key_path,
        origin=args.origin or config.origin,
        tls_cert_path=Path(args.tls_cert) if args.tls_cert else config.tls_cert_path,
        tls_key_path=Path(args.tls_key) if args.tls_key else config.tls_key_path,
        client_ca_path=Path(args.client_ca) if args.client_ca else config.client_ca_path,
        trust_domain=args.trust_domain or config.trust_domain,
        insecure_plaintext=args.insecure_plaintext or config.insecure_plaintext,
        operator_verifier=_operator_verifier(args) or config.operator_verifier,
        migrate=not args.no_migrate,
        witnesses=tuple(args.witness or ()),
        sequencer=SequencerOptions(
            batch_entries_max=args.batch_entries, batch_age_ms_max=args.batch_age_ms
        ),
        metrics_port=config.metrics_port if args.metrics_port is None else args.metrics_port,
        log_format=args.log_format or config.log_format,
        verify_page_port=args.verify_page_port,
        read_database_url=args.read_database or config.read_database_url,
        read_lag_entries_max=(
            config.read_lag_entries_max if args.read_lag_max is None else args.read_lag_max
        ),
        trace_otlp_endpoint=args.trace_otlp_endpoint or config.trace_otlp_endpoint,
        workers=config.workers if args.workers is None else check_workers(args.workers),
        database_pool_size=(
            config.database_pool_size
            if args.database_pool_size is None
            else args.database_pool_size
        ),
        database_pool_overflow=(
            config.database_pool_overflow
            if args.database_pool_overflow is None
            else args.database_pool_overflow
        ),
    )


def _keygen(args: argparse.Namespace) -> int:
    signer_key, verifier_key = generate_keypair(args.name)
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"error: {out} exists; use --force to replace it", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(signer_key + "\n")
    Path(f"{out}.pub").write_text(verifier_key + "\n", encoding="utf-8")
    print(verifier_key)
    # The key id in the one form `admin insurer add-key`, `list` and DSSE envelopes use (the
    # hex inside the verifier key is C2SP's 4-byte note key id, another thing). On stderr, so
    # stdout stays the verifier key alone for scripts.
    key_id = insurer_key_id(parse_verifier_key(verifier_key).public_key)
    print(f"key id {key_id}", file=sys.stderr)
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    url = args.database or ServerConfig.from_environment().database_url
    upgrade(create_ledger_engine(url))
    print(f"database at {url} is at the latest schema")
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    from ledger.coverage.rebuild import rebuild_and_compare

    url = args.database or ServerConfig.from_environment().database_url
    engine = create_ledger_engine(url)
    upgrade(engine)
    report = rebuild_and_compare(engine)
    if args.json:
        print(
            json.dumps(
                {
                    "tree_size": report.tree_size,
                    "entries_replayed": report.entries_replayed,
                    "consistent": report.consistent,
                    "first_diverging_leaf_index": report.first_diverging_leaf_index,
                    "refused": [{"leaf_index": leaf, "why": why} for leaf, why in report.refused],
                    "divergences": [
                        {
                            "table": d.table,
                            "first_leaf_index": d.first_leaf_index,
                            "description": d.describe(),
                        }
                        for d in report.divergences
                    ],
                },
                indent=2,
            )
        )
    else:
        print(f"replayed {report.entries_replayed} entries (tree size {report.tree_size})")
        for leaf, why in report.refused:
            print(f"  entry {leaf} is refused by the rules on replay: {why}")
        for divergence in report.divergences[:50]:
            print(f"  {divergence.describe()} (first entry {divergence.first_leaf_index})")
        if len(report.divergences) > 50:
            print(f"  ... and {len(report.divergences) - 50} more differences")
        if report.consistent:
            print("projections match the log")
        else:
            print(
                "PROJECTIONS DISAGREE WITH THE LOG: first diverging entry "
                f"{report.first_diverging_leaf_index}",
                file=sys.stderr,
            )
    return 0 if report.consistent else 1


def _key_store(args: argparse.Namespace) -> KeyStore:
    url = args.database or ServerConfig.from_environment().database_url
    engine = create_ledger_engine(url)
    upgrade(engine)
    return KeyStore(engine)


def _instant(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    instant = dt.datetime.fromisoformat(text)
    return instant if instant.tzinfo else instant.replace(tzinfo=dt.UTC)


def _operator_verifier(args: argparse.Namespace) -> str:
    text = str(args.operator_verifier or "")
    if text.startswith("@"):
        return Path(text[1:]).read_text(encoding="utf-8").strip()
    return text


def _operator_client(args: argparse.Namespace) -> tuple[Any, Any]:
    """(channel, OperatorClient) signing with --operator-key, verifying with --log-verifier."""
    from clients.channel import connection_from_arguments
    from clients.operator import OperatorClient
    from clients.verify import TrustedLog

    signer = parse_signer_key(Path(args.operator_key).read_text(encoding="utf-8").strip())
    channel = connection_from_arguments(args).open()
    log = TrustedLog.from_verifier_key(args.log_verifier)
    return channel, OperatorClient(channel, signer=signer, log=log)


def _add_key(args: argparse.Namespace) -> int:
    from ledger.keys import insurer_key_id
    from ledger.signers import SignerRole

    text = args.verifier_key or Path(args.verifier_key_file).read_text(encoding="utf-8").strip()
    public_key = parse_verifier_key(text).public_key
    channel, operator = _operator_client(args)
    with channel:
        receipt = operator.register_key(
            args.insurer,
            public_key,
            role=SignerRole(args.role),
            valid_from=_instant(args.valid_from),
            valid_until=_instant(args.valid_until),
            jurisdiction=args.jurisdiction or "",
        )
    print(
        f"registered {insurer_key_id(public_key)} for {args.insurer} ({args.role}): "
        f"KeyRegistered at leaf {receipt.leaf_index}"
    )
    return 0


def _revoke_key(args: argparse.Namespace) -> int:
    channel, operator = _operator_client(args)
    with channel:
        receipt = operator.revoke_key(
            args.key_id, reason=args.reason, revoked_from=_instant(args.at)
        )
    print(f"revoked {args.key_id}: KeyRevoked at leaf {receipt.leaf_index}")
    return 0


def _erase(args: argparse.Namespace) -> int:
    if args.expired:
        return _erase_expired(args)
    if args.person is None or not args.basis:
        raise ValueError("erase needs --person and --basis, or --expired")
    channel, operator = _operator_client(args)
    with channel:
        token, receipt = operator.erase_person(args.person, basis=args.basis)
    print(
        f"erased {token} ({args.basis}): PersonErased at leaf {receipt.leaf_index}; the identity "
        "vault no longer links the token to the person"
    )
    return 0


def _erase_expired(args: argparse.Namespace) -> int:
    """Everyone past their jurisdiction's retention period (read from the database), erased
    one signed PersonErased at a time; idempotent (the erased are not listed again)."""
    from clients.operator import person_erased
    from ledger.identity.retention import expired_people

    url = args.database or ServerConfig.from_environment().database_url
    engine = create_ledger_engine(url)
    today = dt.datetime.now(dt.UTC).date()
    with engine.connect() as connection:
        expired = expired_people(connection, today)
    engine.dispose()
    channel, operator = _operator_client(args)
    with channel:
        for person in expired:
            receipt = operator.submit(
                person_erased(
                    person.person_token, basis=person.why, occurred_at=dt.datetime.now(dt.UTC)
                )
            )
            print(f"erased {person.person_token} ({person.jurisdiction}): {person.why}; "
                  f"leaf {receipt.leaf_index}")  # fmt: skip
    print(f"{len(expired)} person(s) erased past their retention period", file=sys.stderr)
    return 0


def _add_erase_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    erase = commands.add_parser(
        "erase",
        help="erase a person from the identity vault (operator; a signed PersonErased event)",
        description="Looks the person's token up, then signs a PersonErased event naming only\n"
        "the token and the legal basis with the operator's key. The ledger deletes the\n"
        "identifier in the transaction that appends the entry (docs/privacy.md).\n\nExample:\n"
        "  policy-ledger erase --person SA:RESIDENCE_ID:2000000048 --basis 'PDPL art. 18' \\\n"
        "      --server 127.0.0.1:50051 --credentials var/pki --as operator-operator \\\n"
        "      --operator-key var/operator.key --log-verifier @var/log.key.pub\n"
        "  policy-ledger erase --expired --database sqlite+pysqlite:///var/ledger.db \\\n"
        "      --server 127.0.0.1:50051 --credentials var/pki --as operator-operator \\\n"
        "      --operator-key var/operator.key --log-verifier @var/log.key.pub",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    erase.add_argument("--person", type=person_argument, help=f"the person, {PERSON_FORM}")
    erase.add_argument("--basis", help="the legal basis (recorded in the log)")
    erase.add_argument(
        "--expired",
        action="store_true",
        help="erase everyone whose last coverage ended longer ago than their jurisdiction's "
        "retention period (ledger/identity/retention/; reads --database); idempotent",
    )
    erase.add_argument("--database", help="with --expired: the ledger's database URL")
    _add_operator_options(erase)
    erase.set_defaults(handler=_erase)


def _license(args: argparse.Namespace) -> int:
    channel, operator = _operator_client(args)
    with channel:
        receipt = operator.license_insurer(
            args.insurer,
            name=args.name,
            licence_number=args.licence_number,
            effective=args.effective,
        )
    print(
        f"licensed {args.insurer} ({args.licence_number}) from {args.effective}: "
        f"InsurerLicensed at leaf {receipt.leaf_index}"
    )
    return 0


def _list_keys(args: argparse.Namespace) -> int:
    for key in _key_store(args).list(args.insurer or ""):
        until = key.valid_until.isoformat() if key.valid_until else "-"
        revoked = key.revoked_at.isoformat() if key.revoked_at else "-"
        print(
            f"{key.insurer_id}\t{key.role}\t{key.key_id}\tfrom {key.valid_from.isoformat()}"
            f"\tuntil {until}\trevoked {revoked}\tleaf {key.registered_leaf_index}"
        )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from clients.demo import run_demo

    return run_demo(events_count=args.events, workdir=Path(args.workdir))


CLI_COMMANDS_GROUP = "policy_ledger.cli_commands"
"""Entry-point group of command groups: ``register(subparsers)`` adds one (``payments`` and the
clients' groups register this way, so this module names no extension's commands)."""


def _add_scale_options(serve: argparse.ArgumentParser) -> None:
    """``serve``'s read standby, worker processes and tracing (issue 13)."""
    serve.add_argument(
        "--read-database",
        metavar="URL",
        help="a PostgreSQL streaming-replication hot standby of --database: proofs, entries, "
        "checkpoints and coverage reads are answered from it while it is fresh enough "
        "(docs/operations.md, 'Read standby'); writes always go to --database",
    )
    serve.add_argument(
        "--read-lag-max",
        type=_entries_count,
        metavar="ENTRIES",
        help="bypass the read standby when it is more than this many entries behind "
        f"(default {limits.standby_lag_entries_max}, limits.standby_lag_entries_max)",
    )
    serve.add_argument(
        "--workers",
        type=_entries_count,
        metavar="N",
        help="admission/read worker processes sharing the port, beside one sequencer process "
        "(default: the number of cores, or POLICY_LEDGER_WORKERS; 0: one process does "
        f"everything; at most {limits.workers_max}; docs/operations.md, 'Workers')",
    )
    serve.add_argument(
        "--database-pool-size",
        type=_entries_count,
        metavar="N",
        help="PostgreSQL connections this serve keeps open, all its processes together: each "
        "process gets N divided by their number, the sequencer process the remainder "
        f"(default {limits.database_pool_size_default}, or POLICY_LEDGER_DATABASE_POOL_SIZE; "
        f"at least {limits.database_pool_process_size_min} per process; docs/operations.md, "
        "'Database connections')",
    )
    serve.add_argument(
        "--database-pool-overflow",
        type=_entries_count,
        metavar="N",
        help="PostgreSQL connections it may open beyond those under load, divided the same way "
        f"(default {limits.database_pool_overflow_default}, or "
        "POLICY_LEDGER_DATABASE_POOL_OVERFLOW)",
    )
    serve.add_argument(
        "--trace-otlp-endpoint",
        metavar="URL",
        help="send OpenTelemetry traces to this OTLP/HTTP collector (such as "
        "http://127.0.0.1:4318; /v1/traces is appended); default: OTEL_EXPORTER_OTLP_ENDPOINT, "
        "else no tracing. OTEL_SERVICE_NAME names the service (default policy-ledger); "
        "docs/operations.md, 'Tracing'",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="policy-ledger",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the gRPC server",
        description=(
            "Run the gRPC server (SIGTERM or Ctrl-C stops it cleanly).\n\n"
            "Example:\n  policy-ledger serve --database sqlite+pysqlite:///var/ledger.db "
            "--listen 127.0.0.1:50051 --log-key-file var/log.key \\\n"
            "    --tls-cert var/pki/server.pem "
            "--tls-key var/pki/server.key --client-ca var/pki/ca.pem \\\n"
            "    --operator-verifier @var/operator.key.pub --enrol-listen 127.0.0.1:50052 "
            "--client-ca-key var/pki/ca.key \\\n"
            "    --operator-key-file var/operator.key"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--database", help="SQLAlchemy URL (default: sqlite file var/ledger.db)")
    serve.add_argument("--listen", help="host:port (default 127.0.0.1:50051; port 0 picks one)")
    add_log_key_file(serve, help="file holding the log's private signer key (default var/log.key)")
    serve.add_argument("--origin", help="checkpoint origin (default: the log key's name)")
    serve.add_argument("--tls-cert", help="the server's certificate chain, PEM (mTLS)")
    serve.add_argument("--tls-key", help="the server's private key, PEM")
    serve.add_argument("--client-ca", help="CA certificate(s) whose clients are accepted, PEM")
    serve.add_argument(
        "--trust-domain", help="SPIFFE trust domain of callers (default policy-ledger.local)"
    )
    serve.add_argument(
        "--insecure-plaintext",
        action="store_true",
        help="no TLS: development only; no caller can authenticate (see docs/security.md)",
    )
    serve.add_argument(
        "--operator-verifier",
        help="the operator's verifier key, or @file: an empty log's genesis entry names it; a "
        "log that has one refuses a key that is not one of its operator keys",
    )
    serve.add_argument("--port-file", help="write the port listened on to this file")
    serve.add_argument(
        "--batch-entries",
        type=int,
        default=SequencerOptions.batch_entries_max,
        help="entries per batch at most (default %(default)s)",
    )
    serve.add_argument(
        "--batch-age-ms",
        type=float,
        default=SequencerOptions.batch_age_ms_max,
        help="how long a batch waits for more entries (default %(default)s ms)",
    )
    serve.add_argument(
        "--no-migrate", action="store_true", help="do not apply migrations at start-up"
    )
    serve.add_argument(
        "--witness",
        action="append",
        metavar="URL=VERIFIERKEY",
        help="submit every checkpoint to this C2SP tlog-witness (repeatable; docs/witness.md)",
    )
    serve.add_argument(
        "--metrics-port",
        type=_port_number,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics, HOST being --listen's "
        "(0 picks a port; default: no metrics endpoint; docs/operations.md lists the series)",
    )
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text (default), or json: one JSON object per line, and one line per call with "
        "its request id and caller",
    )
    serve.add_argument(
        "--verify-page-port",
        type=_port_number,
        metavar="PORT",
        help="serve the certificate verification page at http://HOST:PORT/verify/, HOST being "
        "--listen's (0 picks a port; default: none; read-only, one static file; "
        "docs/verify-page.md)",
    )
    _add_scale_options(serve)
    add_enrol_serve_options(serve)
    serve.set_defaults(handler=_serve)

    keygen = commands.add_parser(
        "keygen",
        help="make an Ed25519 key pair",
        description="Write a signer key (PRIVATE+KEY+...) to --out, the verifier key to --out.pub, "
        "print the verifier key, and the key id (ed25519:...) on stderr.\n\n"
        "Example:\n  policy-ledger keygen --name policy-ledger.example/log --out var/log.key",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keygen.add_argument("--name", required=True, help="key name (for the log key: the origin)")
    keygen.add_argument("--out", required=True, help="file to write the signer key to (mode 0600)")
    keygen.add_argument("--force", action="store_true", help="replace an existing file")
    keygen.set_defaults(handler=_keygen)

    database = commands.add_parser("db", help="database maintenance")
    database_commands = database.add_subparsers(dest="db_command", required=True)
    database_upgrade = database_commands.add_parser(
        "upgrade",
        help="apply migrations",
        description="Apply the schema migrations (Alembic).\n\n"
        "Example:\n  policy-ledger db upgrade --database postgresql+psycopg://ledger@db/ledger",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    database_upgrade.add_argument("--database", help="SQLAlchemy URL")
    database_upgrade.set_defaults(handler=_db_upgrade)

    _add_admin_commands(commands)
    _add_pki_commands(commands)
    _add_access_commands(commands)
    _add_erase_command(commands)
    add_enrol_commands(commands)
    _add_health_command(commands)
    for point in entry_points(group=CLI_COMMANDS_GROUP):  # e.g. `payments` (payments/cli.py)
        point.load()(commands)

    rebuild = commands.add_parser(
        "rebuild",
        help="recompute the projections from the log and compare them with the stored ones",
        description=(
            "Replays every entry through the policy rules into scratch projections and compares\n"
            "them, table by table, with the stored ones. Exit code 0 when they match, 1 when\n"
            "they differ (each difference is printed with the first entry behind it).\n\n"
            "Example:\n  policy-ledger rebuild --database sqlite+pysqlite:///var/ledger.db"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rebuild.add_argument("--database", help="SQLAlchemy URL (default: POLICY_LEDGER_DATABASE_URL)")
    rebuild.add_argument("--json", action="store_true", help="print a machine-readable report")
    rebuild.set_defaults(handler=_rebuild)

    demo = commands.add_parser(
        "demo",
        help="show the service end to end (what `make run` does)",
        description="Start a server on SQLite and play the operator, an insurer, a renewal\n"
        "portal and an auditor against it.\n\nExample:\n  policy-ledger demo --events 300",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--events", type=int, default=300, help="events to submit (default 300)")
    demo.add_argument("--workdir", default="var/demo", help="scratch folder (default var/demo)")
    demo.set_defaults(handler=_demo)
    return parser


def _add_admin_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin = commands.add_parser("admin", help="operator commands (direct database access)")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)
    insurer = admin_commands.add_parser("insurer", help="insurer signing keys")
    insurer_commands = insurer.add_subparsers(dest="insurer_command", required=True)

    add_key = insurer_commands.add_parser(
        "add-key",
        help="register a principal's public key (a signed KeyRegistered event)",
        description="Signs a KeyRegistered event with the operator's key and submits it; the\n"
        "key table is its projection.\n\nExample:\n  policy-ledger admin insurer add-key "
        "--insurer acme-health --verifier-key-file acme.key.pub \\\n      --server "
        "127.0.0.1:50051 --credentials var/pki --as operator-operator \\\n      "
        "--operator-key var/operator.key --log-verifier @var/log.key.pub",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_key.add_argument("--insurer", required=True, help="the principal id")
    add_key.add_argument(
        "--role",
        default="insurer",
        choices=["insurer", "authority", "operator", "regulator", "funder", "beneficiary"],
        help="the principal's signer role (default insurer)",
    )
    add_key.add_argument("--jurisdiction", help="an authority's country (ISO 3166-1 alpha-2)")
    source = add_key.add_mutually_exclusive_group(required=True)
    source.add_argument("--verifier-key", help="verifier key string from `policy-ledger keygen`")
    source.add_argument("--verifier-key-file", help="file holding the verifier key string")
    add_key.add_argument("--valid-from", help="ISO 8601 instant (default: now)")
    add_key.add_argument("--valid-until", help="ISO 8601 instant (default: open-ended)")
    _add_operator_options(add_key)
    add_key.set_defaults(handler=_add_key)

    revoke = insurer_commands.add_parser(
        "revoke-key",
        help="revoke a key (a signed KeyRevoked event)",
        description="Example:\n  policy-ledger admin insurer revoke-key --key-id "
        "ed25519:0123abcd4567ef89 --reason compromised \\\n      --server 127.0.0.1:50051 "
        "--credentials var/pki --as operator-operator \\\n      "
        "--operator-key var/operator.key --log-verifier @var/log.key.pub",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    revoke.add_argument("--key-id", required=True, help="the key id (ed25519:...)")
    revoke.add_argument("--reason", required=True, help="why (recorded in the log)")
    revoke.add_argument("--at", help="ISO 8601 instant (default and earliest: its entry's)")
    _add_operator_options(revoke)
    revoke.set_defaults(handler=_revoke_key)

    license_command = insurer_commands.add_parser(
        "license",
        help="license an insurer (a signed InsurerLicensed event)",
        description="Signs an InsurerLicensed event with the operator's key and submits it;\n"
        "only a licensed insurer's policy events are accepted.\n\nExample:\n  "
        "policy-ledger admin insurer license --insurer acme-health --name 'Acme Health' \\\n"
        "      --licence-number CCHI-0042 --effective 2026-01-01 --server 127.0.0.1:50051 \\\n"
        "      --credentials var/pki --as operator-operator \\\n      "
        "--operator-key var/operator.key --log-verifier @var/log.key.pub",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    license_command.add_argument("--insurer", required=True, help="the insurer's principal id")
    license_command.add_argument("--name", required=True, help="the insurer's legal name")
    license_command.add_argument("--licence-number", required=True, help="the regulator's number")
    license_command.add_argument(
        "--effective",
        required=True,
        type=dt.date.fromisoformat,
        help="first day of the licence (YYYY-MM-DD)",
    )
    _add_operator_options(license_command)
    license_command.set_defaults(handler=_license)

    listing = insurer_commands.add_parser(
        "list",
        help="list registered keys",
        description="Example:\n  policy-ledger admin insurer list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listing.add_argument("--insurer", help="only this insurer's keys")
    listing.add_argument("--database", help="SQLAlchemy URL")
    listing.set_defaults(handler=_list_keys)
    add_beneficiary_commands(admin_commands)


EXIT_OK = 0
EXIT_VERDICT_FAILED = 1
"""An audit or a check failed, or a household is not renewable: the answer is no."""
EXIT_USAGE = 2
"""A bad flag or value, an unreadable file, a port or database file already in use."""
EXIT_SERVER = 3
"""The server (or the database) is unreachable, or the server refused the call."""


def _pki_init(args: argparse.Namespace) -> int:
    from ledger.pki import init_directory

    for path in init_directory(Path(args.out), trust_domain=args.trust_domain):
        print(path)
    return 0


def _pki_issue(args: argparse.Namespace) -> int:
    from ledger.pki import issue_into_directory

    for path in issue_into_directory(Path(args.out), args.role, args.name, args.trust_domain):
        print(path)
    return 0


def _add_pki_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ledger.pki import DEFAULT_TRUST_DOMAIN, ROLES

    pki = commands.add_parser("pki", help="development certificates for mTLS")
    pki_commands = pki.add_subparsers(dest="pki_command", required=True)
    init = pki_commands.add_parser(
        "init",
        help="make a development CA, a server certificate and one client per role",
        description="Writes ca.pem/ca.key, server.pem/server.key (127.0.0.1, localhost) and\n"
        "ROLE-NAME.pem/.key for operator-operator, auditor-auditor, authority-gov-health,\n"
        "portal-KW, portal-SA and insurer-acme-health. Production operators bring their own CA\n"
        "(docs/security.md).\n\nExample:\n  policy-ledger pki init --out var/pki",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("--out", required=True, help="directory to write to (must hold no CA)")
    init.add_argument("--trust-domain", default=DEFAULT_TRUST_DOMAIN, help="SPIFFE trust domain")
    init.set_defaults(handler=_pki_init)
    issue = pki_commands.add_parser(
        "issue",
        help="issue one more client certificate with the CA of a directory",
        description="Writes ROLE-NAME.pem/.key, with the SAN spiffe://DOMAIN/ROLE/NAME.\n\n"
        "Example:\n  policy-ledger pki issue --out var/pki --role insurer --name gulf-health",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    issue.add_argument("--out", required=True, help="directory holding ca.pem and ca.key")
    issue.add_argument("--role", required=True, choices=ROLES)
    issue.add_argument("--name", required=True, help="insurer id, jurisdiction, or a name")
    issue.add_argument("--trust-domain", default=DEFAULT_TRUST_DOMAIN, help="SPIFFE trust domain")
    issue.set_defaults(handler=_pki_issue)


def _access_list(args: argparse.Namespace) -> int:
    from ledger.coverage.projector import person_ref
    from ledger.storage.access_log import AccessLog
    from ledger.storage.vault_store import VaultStore

    url = args.database or ServerConfig.from_environment().database_url
    engine = create_ledger_engine(url)
    upgrade(engine)
    person = ""  # access records name people by token: look the person's up in the vault
    if args.person:
        person = VaultStore(engine).token_of(person_ref(args.person)) or ""
        if not person:
            print(
                f"{person_text(args.person)}: no such person in the identity vault", file=sys.stderr
            )
            print("0 access record(s)", file=sys.stderr)
            return 0
    records = AccessLog(engine).list(person_key=person, caller=args.caller or "")
    for record in records:
        people = ", ".join(record.person_keys) or record.subject
        print(
            f"{record.recorded_at.isoformat()}\t{record.caller}\t{record.method}\t"
            f"{record.purpose}\ttree size {record.tree_size}\t{people}"
        )
    print(f"{len(records)} access record(s)", file=sys.stderr)
    return 0


def _add_access_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    access = commands.add_parser("access", help="who read whose data (operator, database)")
    access_commands = access.add_subparsers(dest="access_command", required=True)
    listing = access_commands.add_parser(
        "list",
        help="list access records per person or per caller, newest first",
        description="Every answer that carried a person's data was recorded: when, the\n"
        "caller's SPIFFE ID, the method, the purpose, the tree size answered at.\n\n"
        "Examples:\n  policy-ledger access list --person SA:RESIDENCE_ID:2123456788\n"
        "  policy-ledger access list --caller spiffe://policy-ledger.local/portal/KW",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    who = listing.add_mutually_exclusive_group(required=True)
    who.add_argument("--person", type=person_argument, help=PERSON_FORM)
    who.add_argument("--caller", help="the caller's SPIFFE ID")
    listing.add_argument("--database", help="SQLAlchemy URL")
    listing.set_defaults(handler=_access_list)


def _health(args: argparse.Namespace) -> int:
    """Ask the standard gRPC health service; with ``wait_for_ready`` the call waits for the
    server to come up (gRPC retries the connection) instead of failing at once, up to --wait."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from clients.channel import connection_from_arguments

    with connection_from_arguments(args).open() as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(),
            timeout=args.wait or None,
            wait_for_ready=args.wait > 0,
        )
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(status)
    return EXIT_OK if answer.status == health_pb2.HealthCheckResponse.SERVING else EXIT_SERVER


def _add_health_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from clients.channel import add_connection_arguments

    health = commands.add_parser(
        "health",
        help="is the server up and serving? (waits for it to start, up to --wait seconds)",
        description="Exit 0 once the server answers SERVING; 3 when it is not serving or does\n"
        "not answer within --wait seconds.\n\nExample:\n  policy-ledger health --server "
        "127.0.0.1:50051 --credentials var/pki --as auditor-auditor --wait 30",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_arguments(health)
    health.add_argument(
        "--wait", type=float, default=0.0, help="seconds to wait for the server (default: none)"
    )
    health.set_defaults(handler=_health)


def _add_operator_options(parser: argparse.ArgumentParser) -> None:
    from clients.channel import add_connection_arguments

    add_connection_arguments(parser)
    parser.add_argument("--operator-key", required=True, help="the operator's signer key file")
    add_log_verifier(parser, required=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``policy-ledger`` console script (exit codes: the EXIT_* constants)."""
    args = _parser().parse_args(argv)  # a usage mistake exits EXIT_USAGE here (argparse)
    try:
        return int(args.handler(args))
    except Exception as error:  # expected failures get one line and their exit code
        code, message = _failure(error)
        if code is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return code


def _unimplemented_hint(code: object) -> str:
    import grpc

    if code != grpc.StatusCode.UNIMPLEMENTED:
        return ""
    return (
        " (this server does not offer that service: renewals need the payments extension, "
        "enabled by POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY on the server; see docs/payments.md)"
    )


def _failure(error: Exception) -> tuple[int | None, str]:
    """The exit code and message of an expected failure; (None, "") for a bug."""
    import grpc

    from ledger.storage.faults import is_storage_fault

    if isinstance(error, ClientError):
        # A call the server refused (the demo and the admin commands are gRPC clients).
        return EXIT_SERVER, f"the server refused a call: {error}" + _unimplemented_hint(error.code)
    if isinstance(error, grpc.RpcError):
        details = error.details() if isinstance(error, grpc.Call) else ""
        return EXIT_SERVER, f"the server did not answer: {error.code().name} {details}"
    if is_storage_fault(error) and not isinstance(error, OSError):  # OSError: a local file
        cause = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        return EXIT_SERVER, f"the database is unreachable or failing: {cause}"
    if isinstance(error, LedgerError):
        return EXIT_USAGE, error.message
    if isinstance(error, (ValueError, OSError)):
        # Bad option values (SequencerOptions bounds, dates) and unreadable files.
        return EXIT_USAGE, str(error)
    return None, ""


if __name__ == "__main__":
    raise SystemExit(main())

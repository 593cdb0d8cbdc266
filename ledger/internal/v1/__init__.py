"""Generated protobuf code for ledger.internal.v1. Do not edit: run ``make proto``.

Generated from protos/ledger/internal/v1/*.proto by grpcio-tools and mypy-protobuf (pinned in
constraints.txt); CI fails when this folder differs from what ``make proto`` produces. Not part of
the public API: the worker -> sequencer hand-off of ``serve --workers N`` (ledger.handoff).
"""

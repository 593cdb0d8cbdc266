"""Generated protobuf and gRPC code for ledger.v1. Do not edit: run ``make proto``.

Generated from protos/ledger/v1/*.proto by grpcio-tools and mypy-protobuf (pinned in
constraints.txt); CI fails when this folder differs from what ``make proto`` produces.
"""

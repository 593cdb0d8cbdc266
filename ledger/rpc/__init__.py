"""The gRPC layer: thin servicers that translate between protobuf and the domain, and delegate.

Errors map to status codes in one table (:mod:`ledger.rpc.status`); the server is assembled in
:mod:`ledger.rpc.server`.
"""

"""The worker -> sequencer hand-off of ``serve --workers N`` (docs/design.md, "Several processes").

:class:`ledger.handoff.server.HandoffServer` runs in the sequencer process and feeds the
:class:`ledger.sequencer.Sequencer`; :class:`ledger.handoff.client.SequencerClient` is its
drop-in in each worker process. :mod:`ledger.handoff.wire` is the framing and the conversions
(protos/ledger/internal/v1/handoff.proto, not part of the public API).
"""

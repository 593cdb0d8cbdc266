"""Gateways' server-to-server results: stored verbatim before they are acknowledged.

KNET posts the result of a hosted-page payment to our ``responseURL`` and expects a body
``REDIRECT=<receipt url>``. This receiver (``POST /notify/<gateway>``):

1. reads the body (at most 64 KiB) and asks the gateway's adapter to authenticate and parse it;
2. stores it in ``gateway_notifications`` (verbatim, with whether it verified) and commits;
3. only then answers the adapter's acknowledgement;
4. then, in the background, confirms the payment with the gateway itself (inquiry by track id)
   and records it when captured (:meth:`payments.renewal.Renewals.complete_payment`). A
   notification is never believed on its own word, verified or not.

If storing fails, the gateway gets HTTP 503 and no acknowledgement, so it retries (or, for
KNET, reverses the payment); nothing was lost because nothing was acknowledged.

The receiver has one port. Under ``serve --workers N`` it runs in the sequencer process only, and
the workers are told its URL: :func:`place_receiver`, the ledger supervisor's
``policy_ledger.child_environments`` entry point.
"""

from __future__ import annotations

import logging
import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import Engine, insert

from ledger.clock import Clock, to_micros
from payments.gateway import PaymentGateway
from payments.limits import NOTIFICATION_BYTES_MAX
from payments.renewal import Renewals
from payments.tables import gateway_notifications

__all__ = [
    "NOTIFICATION_BYTES_MAX",
    "NOTIFY_LISTEN_ENVIRONMENT",
    "NOTIFY_URL_ENVIRONMENT",
    "NotificationReceiver",
    "place_receiver",
]

log = logging.getLogger(__name__)

NOTIFY_LISTEN_ENVIRONMENT = "POLICY_LEDGER_PAYMENTS_NOTIFY_LISTEN"
"""``host:port`` the receiver listens on (port 0: any free one); unset: no receiver."""
NOTIFY_URL_ENVIRONMENT = "POLICY_LEDGER_PAYMENTS_NOTIFY_URL"
"""The public base URL gateways post to (default: the receiver's own address)."""


def place_receiver(sequencer: dict[str, str], worker: dict[str, str]) -> None:
    """``serve --workers N``'s child environments (``ledger.rpc.supervisor.ChildEnvironments``):
    a configured receiver listens in the sequencer process only (one port for all); the workers,
    which give gateways the URL to notify, are told it (unless one is set) and listen on none.
    A port 0 is picked here, once, so that URL is the one the sequencer process listens at."""
    listen = sequencer.get(NOTIFY_LISTEN_ENVIRONMENT, "")
    if not listen:
        return
    host, _, port = listen.rpartition(":")
    if port == "0":
        with socket.socket() as probe:
            probe.bind((host or "127.0.0.1", 0))
            port = str(probe.getsockname()[1])
    sequencer[NOTIFY_LISTEN_ENVIRONMENT] = f"{host}:{port}"
    worker.pop(NOTIFY_LISTEN_ENVIRONMENT, None)
    worker.setdefault(NOTIFY_URL_ENVIRONMENT, f"http://{host or '127.0.0.1'}:{port}")


class NotificationReceiver:
    """An HTTP endpoint on ``host:port`` (port 0: any free one) for gateway notifications."""

    def __init__(
        self,
        renewals: Renewals,
        engine: Engine,
        gateways: dict[str, PaymentGateway],
        clock: Clock,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._renewals = renewals
        self._engine = engine
        self._gateways = gateways
        self._clock = clock
        self._confirmations = ThreadPoolExecutor(max_workers=4, thread_name_prefix="confirm")
        self._scheduled: list[Future[None]] = []
        self._scheduled_lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("notification %s", format % args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name="gateway-notifications"
        )

    @property
    def base_url(self) -> str:
        """``http://host:port`` of this receiver."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> NotificationReceiver:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def settle(self, timeout_seconds: float) -> None:
        """Wait until every confirmation scheduled so far has finished (operators, tests).

        Raises TimeoutError when some are still running after ``timeout_seconds``.
        """
        with self._scheduled_lock:
            scheduled = list(self._scheduled)
        _, not_done = wait(scheduled, timeout=timeout_seconds)
        if not_done:
            raise TimeoutError(f"{len(not_done)} confirmation(s) still running")

    def stop(self) -> None:
        """Stop serving; let pending confirmations finish."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread.ident is not None:  # started
            self._thread.join()
        self._confirmations.shutdown(wait=True)

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        name = request.path.removeprefix("/notify/").split("?", 1)[0]
        gateway = self._gateways.get(name)
        length = int(request.headers.get("Content-Length") or 0)
        if gateway is None or not 0 < length <= NOTIFICATION_BYTES_MAX:
            request.send_error(404 if gateway is None else 413)
            return
        body = request.rfile.read(length)
        headers = {key: value for key, value in request.headers.items()}
        try:
            notification = gateway.parse_notification(body, headers)
        except Exception:  # an adapter bug must not lose the body: store it unverified
            log.exception("gateway %s could not parse a notification", name)
            notification = None
        reference = notification.merchant_reference if notification else ""
        verified = bool(notification and notification.verified)
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    insert(gateway_notifications).values(
                        payment_id=reference[:64],
                        gateway=name,
                        verified="true" if verified else "false",
                        body=body,
                        received_at_us=to_micros(self._clock.now()),
                    )
                )
        except Exception:
            log.exception("could not store a %s notification; not acknowledging it", name)
            request.send_error(503)
            return
        # The confirmation is scheduled before the answer (so settle() sees it as soon as the
        # gateway has its acknowledgement) but starts only once the answer has been written.
        answered = threading.Event()
        if reference:
            with self._scheduled_lock:
                self._scheduled = [f for f in self._scheduled if not f.done()]
                self._scheduled.append(
                    self._confirmations.submit(self._confirm, reference, answered)
                )
        acknowledgement = notification.acknowledgement if notification else b""
        try:
            request.send_response(200)
            request.send_header("Content-Type", "text/plain")
            request.send_header("Content-Length", str(len(acknowledgement)))
            request.end_headers()
            request.wfile.write(acknowledgement)
        finally:
            answered.set()

    def _confirm(self, payment_id: str, answered: threading.Event) -> None:
        answered.wait()
        try:
            self._renewals.complete_payment(payment_id)
        except Exception:  # reconciliation retries what this could not finish
            log.exception("confirming payment %s after its notification failed", payment_id)

"""KNET hosted-page adapter, "raw" (non-plugin) merchant integration.

KNET is Kuwait's national payment gateway. The Ministry of Interior collects the health-insurance
fee inside the online residence renewal through it. The flow this adapter speaks:

1. **Payment initialization** (``purchase``), no network call. The request fields
   ``id`` (tranportal id), ``password``, ``action=1`` (purchase), ``langid``,
   ``currencycode=414`` (KWD), ``amt``, ``responseURL``, ``errorURL``, ``trackid`` and
   ``udf1``..``udf5`` are joined as ``key=value&...`` (values not URL-encoded). They are
   encrypted with AES-128-CBC, using the 16-character *terminal resource key* as both key and
   IV, with PKCS#5/7 padding, and hex-encoded into ``trandata``. The customer is sent to
   ``<base>/kpg/PaymentHTTP.htm?param=paymentInit&trandata=<hex>&tranportalId=<id>
   &responseURL=<url>&errorURL=<url>``. ``purchase`` answers ``PENDING`` with that URL. The
   track id is our merchant reference. KNET allows only letters and digits, at most 40.
2. **Response notification** (``parse_notification``). KNET POSTs the result server to server
   to ``responseURL`` as a URL-encoded form whose ``trandata`` field holds the encrypted,
   URL-encoded result (``paymentid``, ``result`` = CAPTURED / NOT CAPTURED / CANCELED /
   HOST TIMEOUT, ``auth``, ``avr``, ``ref``, ``tranid``, ``postdate``, ``trackid``,
   ``udf1``-``udf5``, ``amt``, ``authRespCode``). Errors come as plain ``Error`` /
   ``ErrorText``. The merchant stores it and answers with a single line
   ``REDIRECT=<receipt URL>``, which KNET uses to send the customer back. For merchant ids
   certified since September 2023, a missing or wrong answer makes KNET *reverse* the payment.
3. **Inquiry** (``get_status``). A plain (unencrypted) XML fragment ``<id>``, ``<password>``,
   ``<action>8</action>``, ``<amt>`` (the *original amount*), ``<transid>`` and ``<trackid>``
   (both the track id) and ``<udf5>TrackID</udf5>`` is POSTed as ``application/xml`` to
   ``<base>/kpg/tranPipe.htm?param=tranInit``. The answer is a flat XML fragment
   (``<result>``, ``<payid>``, ``<tranid>``, ``<ref>``, ``<amt>``, ...). An unknown track id
   answers ``<error_code_tag>IPAY0100263</error_code_tag>...<result>!ERROR!-IPAY0100263-
   Transaction not found.</result>``. Per K-064 an inquiry ``result`` of SUCCESS or CAPTURED
   means captured, and FAILURE, SUSPECTED or an error means failed.
4. **Refund** (``refund``). The same XML on the same URL with ``action=2`` and the refund
   amount. It counts as refunded only if ``result`` is CAPTURED.

Sources (public). Where they disagree, the choice made here is noted:

* KNET "Merchant Integration Manual" K-064 v1.4 (23 Aug 2023), a Markdown transcription in a
  public repository. It covers field definitions, response samples, ``REDIRECT=`` notification,
  inquiry table, RAW refund, error codes (IPAY0100263 "Transaction details not available") and
  restricted characters. It says ``langid`` is ``EN``/``AR``. KNET's PHP raw sample says
  ``USA``/``AR`` and the Elixir client ``ENG``. **K-064 wins**; the ``language`` setting
  overrides it.
* ``srku14/KNET-Payment-Gateway-SDK`` (KNET's PHP RAW sample: ``SendPerformREQuest.php``,
  ``GetHandlerResponse.php``, ``result.php``, README on the September 2023 notification
  change). It is the source for the AES-128-CBC scheme with key = IV = resource key, PKCS#5
  padding, and hex output.
* An Elixir KNET client (``Knet``/``Knet.Request`` modules). It shows ``tranPipe.htm`` inquiry
  with ``udf5=TrackID`` and the ``!ERROR!-IPAY0100263`` answer for an unknown track id.
* The WooCommerce "wc-knet" plugin. It shows the notification form (``paymentid`` plus
  ``trandata``) and its handling of CAPTURED / CANCELED / other results.

Not established by the sources, and assumed here (the sandbox in ``payments.sandbox.knet``
follows the same assumptions):

* Hex case. KNET's PHP sample emits lowercase and K-064's response sample is uppercase. We emit
  lowercase and accept both.
* What an inquiry answers for a payment the customer has not finished. Any ``result`` this
  module does not know is mapped to ``PENDING``; the sandbox answers ``INITIALIZED``. If real
  KNET answers IPAY0100263 instead, such a payment reads ``NOT_FOUND`` until the customer
  finishes. Do not start a new attempt on ``NOT_FOUND`` before KNET's page session has expired.
* What an inquiry answers after KNET reversed an unacknowledged payment. ``REVERSED`` and
  ``VOIDED`` map to ``DECLINED``.
* KNET's inquiry needs the original amount, but ``get_status`` gets only the merchant reference.
  The adapter remembers the amounts of the payments it started, in memory, and otherwise asks
  ``amount_lookup``. Without either, it raises :class:`GatewayOutcomeUnknown`.
* Refunds have no idempotency key at KNET and no refund inquiry. ``refund_reference`` is
  de-duplicated in this process only and sent in ``udf1`` for reconciliation. A refund whose
  outcome was unknown is never retried here. K-064 also warns that the API refund "has not yet
  been certified or released by KNET".

Security note: AES-CBC without a MAC is malleable. ``verified=True`` only means "decrypted with
our key into a well-formed message whose track id and amount match what we sent". As the
contract says, the result must be confirmed with ``get_status`` before the renewal is
delivered.
"""

from __future__ import annotations

import html
import re
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from payments.gateway import (
    Capability,
    GatewayOutcomeUnknown,
    GatewayRefused,
    GatewayResult,
    Money,
    Notification,
    PaymentRequest,
    PaymentStatus,
)
from payments.gateways._common import (
    HOSTED_PAGE_CAPABILITIES,
    RefundsOnce,
    check_base_url,
    check_money,
    check_timeout,
    post,
    timeout_setting,
)

__all__ = [
    "CURRENCY",
    "CURRENCY_CODE",
    "NOT_FOUND_ERROR",
    "KnetCryptoError",
    "KnetGateway",
    "decrypt_trandata",
    "encrypt_trandata",
    "format_amount",
    "from_settings",
    "is_valid_track_id",
    "parse_amount",
    "parse_tran_pipe_answer",
    "payment_init_path",
    "status_for_result",
    "tran_pipe_path",
]

CURRENCY = "KWD"
CURRENCY_CODE = "414"
"""ISO 4217 numeric code of the Kuwaiti dinar, KNET's ``currencycode``."""
NOT_FOUND_ERROR = "IPAY0100263"
"""KNET's error code for an inquiry about a transaction it does not have."""
FILS_PER_DINAR = 1000
payment_init_path = "/kpg/PaymentHTTP.htm"
tran_pipe_path = "/kpg/tranPipe.htm"

_AMOUNT = re.compile(r"(?P<dinars>[0-9]+)(?:\.(?P<fils>[0-9]{1,3}))?", re.ASCII)
_TRACK_ID = re.compile(r"[A-Za-z0-9]{1,40}", re.ASCII)
_HEX = re.compile(r"(?:[0-9A-Fa-f]{32})+", re.ASCII)
_XML_LEAF = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>([^<]*)</\1>")
_CAPTURED = frozenset({"CAPTURED", "SUCCESS"})
_DECLINED = frozenset(
    {
        "NOT CAPTURED",
        "DENIED",
        "DECLINED",
        "CANCELED",
        "CANCELLED",
        "FAILURE",
        "SUSPECTED",
        "HOST TIMEOUT",
        "RESTRICTED",
        "REVERSED",
        "VOIDED",
    }
)


class KnetCryptoError(ValueError):
    """``trandata`` does not decrypt with the resource key (wrong key, tampered, truncated)."""


# --- amounts ------------------------------------------------------------------------------------


def format_amount(fils: int) -> str:
    """KNET's ``amt`` for an amount in fils: always three decimals (``100500`` -> ``"100.500"``)."""
    if type(fils) is not int:
        raise TypeError(f"amount must be an int number of fils, got {type(fils).__name__}")
    if fils < 0:
        raise ValueError(f"amount must not be negative, got {fils}")
    dinars, rest = divmod(fils, FILS_PER_DINAR)
    return f"{dinars}.{rest:03d}"


def parse_amount(text: str) -> int:
    """Fils from KNET's ``amt`` (``"100.5"`` and ``"100.500"`` -> ``100500``), exactly, no float.

    Refuses a sign, more than three decimals, exponents, spaces and anything not ASCII digits.
    """
    match = _AMOUNT.fullmatch(text)
    if match is None:
        raise ValueError(f"not a KWD amount with at most 3 decimals: {text!r}")
    fils = (match["fils"] or "").ljust(3, "0")
    return int(match["dinars"]) * FILS_PER_DINAR + int(fils)


# --- crypto -------------------------------------------------------------------------------------


def _cipher(resource_key: str) -> Cipher[modes.CBC]:
    key = resource_key.encode("ascii")
    if len(key) != 16:
        raise ValueError("the terminal resource key must be 16 ASCII characters (AES-128)")
    return Cipher(algorithms.AES(key), modes.CBC(key))  # KNET: the IV is the key itself


def encrypt_trandata(plaintext: str, resource_key: str) -> str:
    """``trandata``: AES-128-CBC (key = IV = resource key), PKCS#7 padding, lowercase hex."""
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext.encode("utf-8")) + padder.finalize()
    encryptor = _cipher(resource_key).encryptor()
    return (encryptor.update(padded) + encryptor.finalize()).hex()


def decrypt_trandata(trandata: str, resource_key: str) -> str:
    """The plaintext of ``trandata`` (hex, either case); :class:`KnetCryptoError` if it fails."""
    text = trandata.strip()
    if _HEX.fullmatch(text) is None:
        raise KnetCryptoError("trandata is not hex whole AES blocks")
    decryptor = _cipher(resource_key).decryptor()
    padded = decryptor.update(bytes.fromhex(text)) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        raw = unpadder.update(padded) + unpadder.finalize()
        return raw.decode("utf-8")
    except ValueError as exc:  # bad padding, or not UTF-8 (UnicodeDecodeError is a ValueError)
        raise KnetCryptoError("trandata does not decrypt with this resource key") from exc


# --- messages -----------------------------------------------------------------------------------


def is_valid_track_id(track_id: str) -> bool:
    """KNET track ids: letters and digits only, 1 to 40 (K-064 3.5.4 and 9.1.1)."""
    return _TRACK_ID.fullmatch(track_id) is not None


def status_for_result(result: str) -> PaymentStatus:
    """A KNET ``result`` as a payment status. A result not known to be final reads PENDING."""
    word = " ".join(result.upper().split())
    if word in _CAPTURED:
        return PaymentStatus.CAPTURED
    if word in _DECLINED:
        return PaymentStatus.DECLINED
    return PaymentStatus.PENDING


def parse_tran_pipe_answer(body: str) -> dict[str, str]:
    """The leaf elements of a tranPipe answer (a flat XML fragment, no root) as a dict."""
    return {name: html.unescape(value) for name, value in _XML_LEAF.findall(body)}


def _xml_fragment(fields: Mapping[str, str]) -> str:
    return "".join(f"<{k}>{html.escape(v, quote=False)}</{k}>" for k, v in fields.items())


def _kv_join(fields: Mapping[str, str]) -> str:
    return "&".join(f"{k}={v}" for k, v in fields.items())


def _error_code(fields: Mapping[str, str]) -> str:
    """The IPAY error code of a tranPipe answer, or "" when it is not an error."""
    if fields.get("error_code_tag"):
        return fields["error_code_tag"]
    result = fields.get("result", "")
    if result.startswith("!ERROR!"):
        return result.removeprefix("!ERROR!").strip("-").split("-", 1)[0] or "unknown"
    return ""


@dataclass(frozen=True)
class _Started:
    amount: Money
    receipt_url: str


# --- the adapter --------------------------------------------------------------------------------


class KnetGateway:
    """KNET hosted page (raw integration): purchase, notification, inquiry, refund.

    Thread-safe: the only shared state is the payments started by this process (behind a lock)
    and the refunds it made (:class:`~payments.gateways._common.RefundsOnce`); each inquiry or
    refund is its own HTTP request.
    """

    name: str = "knet"

    def __init__(
        self,
        *,
        base_url: str,
        tranportal_id: str,
        password: str,
        resource_key: str,
        receipt_url: str,
        timeout_seconds: float = 10.0,
        language: str = "EN",
        amount_lookup: Callable[[str], Money | None] | None = None,
    ) -> None:
        self._base_url = check_base_url(base_url)
        if not tranportal_id or not password:
            raise ValueError("tranportal_id and password are required")
        _cipher(resource_key)  # validates the key
        if not receipt_url:
            raise ValueError("receipt_url is required (KNET sends the customer there)")
        self._timeout = check_timeout(timeout_seconds)
        self._tranportal_id = tranportal_id
        self._password = password
        self._resource_key = resource_key
        self._receipt_url = receipt_url
        self._language = language
        self.amount_lookup = amount_lookup
        """Gives the original amount of a payment this process did not start (the inquiry
        needs it); the renewal service sets it to its payments store."""
        self._lock = threading.Lock()
        self._started: dict[str, _Started] = {}
        self._refunds = RefundsOnce(
            "KNET has no refund inquiry: reconcile it in the KNET merchant portal"
        )

    def capabilities(self) -> frozenset[Capability]:
        return HOSTED_PAGE_CAPABILITIES

    # -- purchase

    def purchase(self, request: PaymentRequest) -> GatewayResult:
        """Build the encrypted payment initialization; answer PENDING with the KNET page URL."""
        ref = request.merchant_reference
        self._check_reference(ref)
        self._check_money(request.amount)
        if not request.notification_url:
            raise GatewayRefused("KNET needs a notification_url (its responseURL)")
        receipt_url = request.return_url or self._receipt_url
        fields = {
            "id": self._tranportal_id,
            "password": self._password,
            "action": "1",
            "langid": self._language,
            "currencycode": CURRENCY_CODE,
            "amt": format_amount(request.amount.amount_minor),
            "responseURL": request.notification_url,
            "errorURL": receipt_url,
            "trackid": ref,
            **{f"udf{i}": "" for i in range(1, 6)},
        }
        for value in fields.values():
            if "&" in value or "\r" in value or "\n" in value:
                raise GatewayRefused("KNET request values may not contain '&' or line breaks")
        trandata = encrypt_trandata(_kv_join(fields), self._resource_key)
        query = urllib.parse.urlencode(
            {
                "param": "paymentInit",
                "trandata": trandata,
                "tranportalId": self._tranportal_id,
                "responseURL": request.notification_url,
                "errorURL": receipt_url,
            }
        )
        with self._lock:
            self._started[ref] = _Started(request.amount, receipt_url)
        return GatewayResult(
            status=PaymentStatus.PENDING,
            merchant_reference=ref,
            currency=CURRENCY,
            redirect_url=f"{self._base_url}{payment_init_path}?{query}",
            message="redirect the customer to KNET",
        )

    # -- notification

    def parse_notification(self, raw: bytes, headers: Mapping[str, str]) -> Notification:
        """Decrypt KNET's response notification; always offer the ``REDIRECT=`` answer."""
        try:
            form = dict(urllib.parse.parse_qsl(raw.decode("ascii"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            form = {}
        plain_ref = form.get("trackid", "")
        fields = self._decrypt_fields(form.get("trandata", ""))
        if fields is None or not self._plausible(fields, plain_ref):
            return Notification(
                merchant_reference=plain_ref if is_valid_track_id(plain_ref) else "",
                verified=False,
                result=None,
                acknowledgement=self._acknowledgement(plain_ref),
            )
        ref = fields["trackid"]
        status = status_for_result(fields["result"])
        amount = parse_amount(fields["amt"]) if fields.get("amt") else 0
        result = GatewayResult(
            status=status,
            merchant_reference=ref,
            gateway_reference=fields.get("paymentid", "") or form.get("paymentid", ""),
            captured_minor=amount if status is PaymentStatus.CAPTURED else 0,
            currency=CURRENCY,
            message=fields["result"],
            raw=fields,
        )
        return Notification(
            merchant_reference=ref,
            verified=True,
            result=result,
            acknowledgement=self._acknowledgement(ref),
        )

    def _decrypt_fields(self, trandata: str) -> dict[str, str] | None:
        try:
            plaintext = decrypt_trandata(trandata, self._resource_key)
        except KnetCryptoError:
            return None
        try:
            return dict(urllib.parse.parse_qsl(plaintext, keep_blank_values=True))
        except ValueError:
            return None

    def _plausible(self, fields: Mapping[str, str], plain_ref: str) -> bool:
        """The checks K-064 asks for: well formed, and matching what we sent (when we know it)."""
        ref = fields.get("trackid", "")
        if not is_valid_track_id(ref) or not fields.get("result"):
            return False
        if plain_ref and plain_ref != ref:
            return False
        try:
            amount = parse_amount(fields["amt"]) if fields.get("amt") else None
        except ValueError:
            return False
        with self._lock:
            started = self._started.get(ref)
        return started is None or amount is None or amount == started.amount.amount_minor

    def _acknowledgement(self, ref: str) -> bytes:
        with self._lock:
            started = self._started.get(ref)
        url = started.receipt_url if started else self._receipt_url
        if is_valid_track_id(ref):
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"trackid": ref})
        return f"REDIRECT={url}".encode()

    # -- inquiry

    def get_status(self, merchant_reference: str) -> GatewayResult:
        """KNET inquiry (action 8) by track id."""
        ref = merchant_reference
        if not is_valid_track_id(ref):  # KNET cannot hold it: it never reached KNET
            return GatewayResult(status=PaymentStatus.NOT_FOUND, merchant_reference=ref)
        amount = self._original_amount(ref)
        fields = self._tran_pipe("8", ref, amount)
        code = _error_code(fields)
        if code == NOT_FOUND_ERROR:
            return GatewayResult(
                status=PaymentStatus.NOT_FOUND,
                merchant_reference=ref,
                message=fields.get("result", ""),
                raw=fields,
            )
        if code:
            raise GatewayOutcomeUnknown(f"KNET inquiry error for {ref}: {fields.get('result')}")
        result = fields.get("result", "")
        if not result or fields.get("trackid", ref) != ref:
            raise GatewayOutcomeUnknown(f"unreadable KNET inquiry answer for {ref}")
        try:
            answered = parse_amount(fields["amt"]) if fields.get("amt") else 0
        except ValueError as exc:
            raise GatewayOutcomeUnknown(f"unreadable amount in KNET answer for {ref}") from exc
        status = status_for_result(result)
        return GatewayResult(
            status=status,
            merchant_reference=ref,
            gateway_reference=fields.get("payid", "") or fields.get("paymentid", ""),
            captured_minor=answered if status is PaymentStatus.CAPTURED else 0,
            currency=CURRENCY,
            message=result,
            raw=fields,
        )

    def _original_amount(self, ref: str) -> Money:
        with self._lock:
            started = self._started.get(ref)
        amount = started.amount if started else None
        if amount is None and self.amount_lookup is not None:
            amount = self.amount_lookup(ref)
        if amount is None:
            raise GatewayOutcomeUnknown(
                f"KNET inquiry needs the original amount of {ref}; pass amount_lookup"
            )
        return amount

    # -- refund

    def refund(
        self, merchant_reference: str, amount: Money, refund_reference: str
    ) -> GatewayResult:
        """KNET refund (action 2) by track id; one ``refund_reference`` refunds once per process."""
        ref = merchant_reference
        self._check_reference(ref)
        self._check_money(amount)
        if not is_valid_track_id(refund_reference):
            raise GatewayRefused("refund_reference: letters and digits only, at most 40")
        return self._refunds.once(
            refund_reference,
            ref,
            amount,
            lambda: self._refund_once(ref, amount, refund_reference),
        )

    def _refund_once(self, ref: str, amount: Money, refund_reference: str) -> GatewayResult:
        fields = self._tran_pipe("2", ref, amount, udf1=refund_reference)
        code = _error_code(fields)
        result = fields.get("result", "")
        if code or result.upper() != "CAPTURED":
            raise GatewayRefused(f"KNET refused the refund of {ref}: {result or 'no result'}")
        return GatewayResult(
            status=PaymentStatus.CAPTURED,
            merchant_reference=ref,
            gateway_reference=fields.get("payid", "") or fields.get("tranid", ""),
            refunded_minor=amount.amount_minor,
            currency=CURRENCY,
            message=result,
            raw=fields,
        )

    # -- not supported by KNET's raw integration

    def authorize(self, request: PaymentRequest) -> GatewayResult:
        raise GatewayRefused("KNET (raw hosted page) does not support authorize")

    def capture(self, merchant_reference: str, amount: Money) -> GatewayResult:
        raise GatewayRefused("KNET (raw hosted page) does not support capture")

    def void(self, merchant_reference: str) -> GatewayResult:
        raise GatewayRefused("KNET (raw hosted page) does not support void")

    # -- helpers

    @staticmethod
    def _check_reference(ref: str) -> None:
        if not is_valid_track_id(ref):
            raise GatewayRefused(f"KNET track ids are letters and digits, 1 to 40: {ref!r}")

    @staticmethod
    def _check_money(amount: Money) -> None:
        check_money(amount, CURRENCY, "KNET")

    def _tran_pipe(self, action: str, ref: str, amount: Money, udf1: str = "") -> dict[str, str]:
        """POST one tranPipe request; GatewayOutcomeUnknown on timeout or an unreadable answer."""
        fields = {
            "id": self._tranportal_id,
            "password": self._password,
            "action": action,
            "amt": format_amount(amount.amount_minor),
            "transid": ref,
            "trackid": ref,
            "udf1": udf1,
            "udf5": "TrackID",
        }
        body = post(
            f"{self._base_url}{tran_pipe_path}?param=tranInit",
            _xml_fragment(fields).encode("utf-8"),
            "application/xml",
            self._timeout,
            f"KNET action {action} for {ref}",
        )
        parsed = parse_tran_pipe_answer(body)
        if "result" not in parsed and not parsed.get("error_code_tag"):
            raise GatewayOutcomeUnknown(f"unreadable KNET answer to action {action} for {ref}")
        return parsed


def from_settings(settings: Mapping[str, str]) -> KnetGateway:
    """The entry-point factory (``policy_ledger.payment_gateways``: ``knet``).

    Keys: ``base_url`` (e.g. ``https://www.kpaytest.com.kw``), ``tranportal_id``, ``password``,
    ``resource_key`` (16 characters), ``receipt_url``, and optionally ``timeout_seconds``
    (default 10) and ``language`` (``EN`` or ``AR``, default ``EN``).
    """
    required = ("base_url", "tranportal_id", "password", "resource_key", "receipt_url")
    missing = [key for key in required if not settings.get(key)]
    if missing:
        raise ValueError(f"knet settings missing: {', '.join(missing)}")
    timeout = timeout_setting(settings, "knet")
    return KnetGateway(
        base_url=settings["base_url"],
        tranportal_id=settings["tranportal_id"],
        password=settings["password"],
        resource_key=settings["resource_key"],
        receipt_url=settings["receipt_url"],
        timeout_seconds=timeout,
        language=settings.get("language", "EN"),
    )

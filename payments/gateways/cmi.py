"""CMI hosted-payment-page adapter (Morocco), ``3D_PAY_HOSTING`` with the ``ver3`` hash.

CMI (Centre Monétique Interbancaire) runs Morocco's card acquiring; its e-commerce platform is
an Asseco/EST "Nestpay" gateway. The flow this adapter speaks:

1. **Payment request** (``purchase``), no network call. The fields ``clientid``,
   ``storetype=3D_PAY_HOSTING``, ``trantype=PreAuth``, ``amount`` (dirhams with two decimals,
   ``"150.00"``), ``currency=504`` (ISO 4217 numeric, MAD), ``oid`` (our merchant reference),
   ``okUrl``, ``failUrl``, ``callbackUrl``, ``shopurl``, ``lang`` (``fr``, ``ar`` or ``en``),
   ``rnd``, ``hashAlgorithm=ver3``, ``encoding=UTF-8`` and ``HASH`` are posted by the customer's
   browser to ``<base>/fim/est3Dgate``. ``purchase`` answers ``PENDING`` with
   ``redirect_url`` = that URL with the fields as its query, and the same fields in ``raw`` so a
   portal can render the auto-submitting POST form CMI documents (:func:`auto_post_form`).
2. **The ver3 hash** (:func:`ver3_hash`). Take every field except ``HASH`` and ``encoding``
   (names compared case-insensitively), order the names case-insensitively in natural order
   (PHP ``natcasesort``), escape each *value* (``\\`` -> ``\\\\``, then ``|`` -> ``\\|``), join
   the values with ``|``, append ``|`` and the escaped *store key*, hash with SHA-512 and encode
   the 64-byte digest in base64. The same rule authenticates CMI's callback.
3. **Callback** (``parse_notification``). CMI POSTs server to server to ``callbackUrl`` a form
   holding the request fields and the result (``Response`` = Approved / Declined / Error,
   ``ProcReturnCode`` ``00`` when approved, ``AuthCode``, ``TransId``, ``HostRefNum``,
   ``ErrMsg``...) with ``HASH`` over all of them. The merchant answers with a plain-text line:
   ``ACTION=POSTAUTH`` to capture an approved pre-authorization, ``APPROVED`` to acknowledge a
   declined one, ``FAILURE`` when the hash does not verify (CMI then retries). A callback whose
   hash fails is returned ``verified=False`` with no result: only a hint to ask ``get_status``.
   A verified approval is reported CAPTURED (what it is once CMI reads ``ACTION=POSTAUTH``);
   if the answer never reaches CMI, ``get_status`` reads AUTHORIZED and the renewal saga
   captures it with ``capture`` (PostAuth), as it does for any authorize/capture rail.
4. **Inquiry** (``get_status``), **capture** and **refund** go to the merchant XML API
   ``<base>/fim/api`` as a ``CC5Request`` (``Name``, ``Password``, ``ClientId``, ``OrderId``)
   with ``<Extra><ORDERSTATUS>QUERY</ORDERSTATUS></Extra>`` (inquiry), ``<Type>PostAuth``
   (capture a pre-authorization that the callback did not capture) or ``<Type>Credit`` with
   ``Total`` and ``Currency`` (refund). The answer is a ``CC5Response`` with ``Response``,
   ``ProcReturnCode``, ``ErrMsg``, ``TransId`` and, for an inquiry, ``Extra`` leaves
   ``TRANS_STAT``, ``ORIG_TRANS_AMT``, ``CAPTURE_AMT``, ``HOST_REF_NUM``.

Sources (public, no official specification was available): CMI merchant samples and community
clients in public repositories (``mehdirochdi/cmi-payment-php``, ``hachchadi/CmiPayment``, the
Nestpay "Generic Hash Request Handler" PHP sample with ``natcasesort``, SHA-512, base64, the
``hash``/``encoding`` exclusion and the ``\\``/``|`` escaping), and callbacks in several
merchant codebases answering ``ACTION=POSTAUTH`` / ``APPROVED`` / ``FAILURE``. The Nestpay
``Extra`` leaves come from a Nestpay client's response model.

Not established by the sources, and assumed here (the sandbox in ``payments.sandbox.cmi``
follows the same assumptions):

* ``ORIG_TRANS_AMT`` and ``CAPTURE_AMT`` in the inquiry answer are in minor units (centimes).
* ``TRANS_STAT``: ``A`` pre-authorized, ``C``/``S`` captured (settled), ``D`` declined,
  ``V`` voided, ``PN`` pending; an unknown order answers ``ProcReturnCode`` ``99`` with
  ``ErrMsg`` "No record found for <oid>". Return code 99 is also CMI's generic error, so only
  the two together read NOT_FOUND; any other error is an unknown outcome.
* Whether est3Dgate accepts the fields by GET: CMI documents POST; the sandbox accepts both.
* The inquiry does not report refunds; refunds are de-duplicated by ``refund_reference`` in this
  process only (as for KNET), and ``get_status`` reports ``refunded_minor=0``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
import secrets
import urllib.parse
from collections.abc import Mapping

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
    "ACK_CAPTURE",
    "ACK_DECLINED",
    "ACK_FAILURE",
    "API_PATH",
    "CURRENCY",
    "CURRENCY_CODE",
    "GATE_PATH",
    "NOT_FOUND_MESSAGE",
    "NOT_FOUND_RETURN_CODE",
    "CmiGateway",
    "auto_post_form",
    "cc5_request",
    "format_amount",
    "from_settings",
    "is_valid_order_id",
    "parse_amount",
    "parse_cc5_response",
    "status_for_trans_stat",
    "ver3_hash",
    "verify_ver3_hash",
]

CURRENCY = "MAD"
CURRENCY_CODE = "504"
"""ISO 4217 numeric code of the Moroccan dirham, CMI's ``currency``."""
CENTIMES_PER_DIRHAM = 100
GATE_PATH = "/fim/est3Dgate"
API_PATH = "/fim/api"
ACK_CAPTURE = b"ACTION=POSTAUTH"
"""Answer to an approved, verified callback: CMI captures the pre-authorization."""
ACK_DECLINED = b"APPROVED"
"""Answer to a verified callback that is not an approval: received, nothing to capture."""
ACK_FAILURE = b"FAILURE"
"""Answer to a callback that does not verify: CMI retries it."""
NOT_FOUND_RETURN_CODE = "99"
NOT_FOUND_MESSAGE = "No record found"
"""With return code 99, the inquiry's answer for an order CMI does not have."""
_HASH_EXCLUDED = frozenset({"hash", "encoding"})
_AMOUNT = re.compile(r"(?P<dirhams>[0-9]+)(?:\.(?P<centimes>[0-9]{1,2}))?", re.ASCII)
_ORDER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
_XML_LEAF = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>([^<]*)</\1>")
_NATURAL_PART = re.compile(r"([0-9]+)")
_TRANS_STAT: dict[str, PaymentStatus] = {
    "A": PaymentStatus.AUTHORIZED,
    "C": PaymentStatus.CAPTURED,
    "S": PaymentStatus.CAPTURED,
    "D": PaymentStatus.DECLINED,
    "V": PaymentStatus.VOIDED,
    "PN": PaymentStatus.PENDING,
}


# --- amounts ------------------------------------------------------------------------------------


def format_amount(centimes: int) -> str:
    """CMI's ``amount`` for an amount in centimes: two decimals (``15050`` -> ``"150.50"``)."""
    if type(centimes) is not int:
        raise TypeError(f"amount must be an int number of centimes, got {type(centimes).__name__}")
    if centimes < 0:
        raise ValueError(f"amount must not be negative, got {centimes}")
    dirhams, rest = divmod(centimes, CENTIMES_PER_DIRHAM)
    return f"{dirhams}.{rest:02d}"


def parse_amount(text: str) -> int:
    """Centimes from CMI's ``amount`` (``"150.5"`` and ``"150.50"`` -> ``15050``), exactly.

    Refuses a sign, a comma, more than two decimals, exponents and spaces.
    """
    match = _AMOUNT.fullmatch(text)
    if match is None:
        raise ValueError(f"not a MAD amount with at most 2 decimals: {text!r}")
    centimes = (match["centimes"] or "").ljust(2, "0")
    return int(match["dirhams"]) * CENTIMES_PER_DIRHAM + int(centimes)


# --- the ver3 hash ------------------------------------------------------------------------------


def _natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """PHP ``natcasesort`` order: case-insensitive, digit runs compared as numbers."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in _NATURAL_PART.split(name.lower())
        if part
    )


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|")


def ver3_hash(fields: Mapping[str, str], store_key: str) -> str:
    """CMI's ``HASH`` of ``fields`` (see the module doc, step 2)."""
    names = sorted((n for n in fields if n.lower() not in _HASH_EXCLUDED), key=_natural_key)
    plain = "|".join(_escape(fields[name]) for name in names) + "|" + _escape(store_key)
    return base64.b64encode(hashlib.sha512(plain.encode("utf-8")).digest()).decode("ascii")


def verify_ver3_hash(fields: Mapping[str, str], store_key: str) -> bool:
    """Whether ``fields`` carry a ``HASH`` (any case) equal to their ver3 hash."""
    given = next((v for k, v in fields.items() if k.lower() == "hash"), "")
    if not given:
        return False
    return hmac.compare_digest(
        given.encode("ascii", "replace"), ver3_hash(fields, store_key).encode()
    )


# --- messages -----------------------------------------------------------------------------------


def is_valid_order_id(order_id: str) -> bool:
    """Our ``oid`` rule: letters, digits, ``-`` and ``_``, 1 to 64."""
    return _ORDER_ID.fullmatch(order_id) is not None


def _is_not_found(fields: Mapping[str, str]) -> bool:
    """CMI's "no such order": return code 99 *and* its message (99 alone is any error)."""
    return fields.get("ProcReturnCode") == NOT_FOUND_RETURN_CODE and fields.get(
        "ErrMsg", ""
    ).startswith(NOT_FOUND_MESSAGE)


def status_for_trans_stat(trans_stat: str) -> PaymentStatus:
    """An inquiry's ``TRANS_STAT`` as a payment status; an unknown code reads PENDING."""
    return _TRANS_STAT.get(trans_stat.strip().upper(), PaymentStatus.PENDING)


def cc5_request(fields: Mapping[str, str], extra: Mapping[str, str] | None = None) -> str:
    """A ``CC5Request`` XML document with ``fields`` as leaves and ``extra`` under ``Extra``."""
    leaves = "".join(f"<{k}>{html.escape(v, quote=False)}</{k}>" for k, v in fields.items())
    if extra:
        inner = "".join(f"<{k}>{html.escape(v, quote=False)}</{k}>" for k, v in extra.items())
        leaves += f"<Extra>{inner}</Extra>"
    return f'<?xml version="1.0" encoding="UTF-8"?><CC5Request>{leaves}</CC5Request>'


def parse_cc5_response(body: str) -> dict[str, str]:
    """The leaf elements of a ``CC5Request`` or ``CC5Response`` (``Extra`` flattened) as a dict.

    A regular expression over leaves, not an XML parser: the documents are flat, and no entity
    or DTD in a gateway's answer is ever expanded.
    """
    return {name: html.unescape(value) for name, value in _XML_LEAF.findall(body)}


def auto_post_form(result: GatewayResult) -> str:
    """The HTML page that posts a PENDING result's fields to CMI (what CMI's samples render)."""
    action, _, _ = result.redirect_url.partition("?")
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in result.raw.items()
    )
    return (
        '<!doctype html><body onload="document.forms[0].submit()">'
        f'<form method="post" action="{html.escape(action)}">{inputs}'
        '<noscript><button type="submit">CMI</button></noscript></form></body>'
    )


# --- the adapter --------------------------------------------------------------------------------


class CmiGateway:
    """CMI hosted page: purchase (PreAuth), callback, inquiry, capture (PostAuth), refund.

    Thread-safe: the only shared state is the refunds made by this process
    (:class:`~payments.gateways._common.RefundsOnce`).
    """

    name: str = "cmi"

    def __init__(
        self,
        *,
        base_url: str,
        client_id: str,
        store_key: str,
        api_name: str,
        api_password: str,
        shop_url: str,
        ok_url: str,
        fail_url: str,
        timeout_seconds: float = 10.0,
        language: str = "fr",
    ) -> None:
        self._base_url = check_base_url(base_url)
        if not client_id or not store_key or not api_name or not api_password:
            raise ValueError("client_id, store_key, api_name and api_password are required")
        if not shop_url or not ok_url or not fail_url:
            raise ValueError("shop_url, ok_url and fail_url are required")
        if language not in ("fr", "ar", "en"):
            raise ValueError(f"language must be fr, ar or en, got {language!r}")
        self._timeout = check_timeout(timeout_seconds)
        self._client_id = client_id
        self._store_key = store_key
        self._api_name = api_name
        self._api_password = api_password
        self._shop_url = shop_url
        self._ok_url = ok_url
        self._fail_url = fail_url
        self._language = language
        self._refunds = RefundsOnce(
            "CMI's inquiry does not report refunds: reconcile it in the CMI merchant back office"
        )

    def capabilities(self) -> frozenset[Capability]:
        return HOSTED_PAGE_CAPABILITIES

    # -- purchase

    def purchase(self, request: PaymentRequest) -> GatewayResult:
        """The signed payment request; PENDING with the est3Dgate URL and the form fields."""
        ref = request.merchant_reference
        self._check_reference(ref)
        self._check_money(request.amount)
        if not request.notification_url:
            raise GatewayRefused("CMI needs a notification_url (its callbackUrl)")
        return_url = request.return_url or self._ok_url
        fields = {
            "clientid": self._client_id,
            "storetype": "3D_PAY_HOSTING",
            "trantype": "PreAuth",
            "amount": format_amount(request.amount.amount_minor),
            "currency": CURRENCY_CODE,
            "oid": ref,
            "okUrl": return_url,
            "failUrl": request.return_url or self._fail_url,
            "callbackUrl": request.notification_url,
            "shopurl": self._shop_url,
            "lang": self._language,
            "rnd": secrets.token_hex(10),
            "hashAlgorithm": "ver3",
            "encoding": "UTF-8",
        }
        fields["HASH"] = ver3_hash(fields, self._store_key)
        return GatewayResult(
            status=PaymentStatus.PENDING,
            merchant_reference=ref,
            currency=CURRENCY,
            redirect_url=f"{self._base_url}{GATE_PATH}?{urllib.parse.urlencode(fields)}",
            message="post the fields to CMI's hosted page",
            raw=fields,
        )

    # -- callback

    def parse_notification(self, raw: bytes, headers: Mapping[str, str]) -> Notification:
        """Verify the callback's ver3 hash; answer ACTION=POSTAUTH, APPROVED or FAILURE."""
        try:
            form = dict(urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            form = {}
        oid = form.get("oid", "")
        hint = oid if is_valid_order_id(oid) else ""
        if not self._plausible(form):
            return Notification(hint, verified=False, result=None, acknowledgement=ACK_FAILURE)
        approved = form.get("ProcReturnCode") == "00" and form.get("Response") == "Approved"
        amount = parse_amount(form["amount"])
        # An approved callback is a pre-authorization that our ACTION=POSTAUTH answer captures:
        # the result describes the payment once CMI has read that answer. If it never does,
        # get_status reads AUTHORIZED and the saga captures it with PostAuth.
        result = GatewayResult(
            status=PaymentStatus.CAPTURED if approved else PaymentStatus.DECLINED,
            merchant_reference=oid,
            gateway_reference=form.get("TransId", ""),
            authorized_minor=amount if approved else 0,
            captured_minor=amount if approved else 0,
            currency=CURRENCY,
            message=form.get("Response", "")
            + (f": {form['ErrMsg']}" if form.get("ErrMsg") else ""),
            raw=form,
        )
        ack = ACK_CAPTURE if approved else ACK_DECLINED
        return Notification(oid, verified=True, result=result, acknowledgement=ack)

    def _plausible(self, form: Mapping[str, str]) -> bool:
        """Hash verified with our store key, our client id, MAD, a well-formed oid and amount."""
        if not verify_ver3_hash(form, self._store_key):
            return False
        if form.get("clientid") != self._client_id or form.get("currency") != CURRENCY_CODE:
            return False
        if not is_valid_order_id(form.get("oid", "")):
            return False
        try:
            parse_amount(form.get("amount", ""))
        except ValueError:
            return False
        return True

    # -- inquiry

    def get_status(self, merchant_reference: str) -> GatewayResult:
        """ORDERSTATUS inquiry by order id."""
        ref = merchant_reference
        if not is_valid_order_id(ref):  # CMI cannot hold it: it never reached CMI
            return GatewayResult(status=PaymentStatus.NOT_FOUND, merchant_reference=ref)
        fields = self._api({"OrderId": ref}, extra={"ORDERSTATUS": "QUERY"})
        if _is_not_found(fields):
            return GatewayResult(
                status=PaymentStatus.NOT_FOUND,
                merchant_reference=ref,
                message=fields.get("ErrMsg", ""),
                raw=fields,
            )
        if fields.get("ProcReturnCode") != "00":  # bad credentials, CMI down: not an answer
            raise GatewayOutcomeUnknown(f"CMI inquiry error for {ref}: {fields.get('ErrMsg')}")
        if fields.get("OrderId", ref) != ref or not fields.get("TRANS_STAT"):
            raise GatewayOutcomeUnknown(f"unreadable CMI inquiry answer for {ref}")
        status = status_for_trans_stat(fields["TRANS_STAT"])
        try:
            authorized = int(fields.get("ORIG_TRANS_AMT") or "0")
            captured = int(fields.get("CAPTURE_AMT") or "0")
        except ValueError as exc:
            raise GatewayOutcomeUnknown(f"unreadable amount in CMI answer for {ref}") from exc
        return GatewayResult(
            status=status,
            merchant_reference=ref,
            gateway_reference=fields.get("TransId", ""),
            authorized_minor=authorized if status is PaymentStatus.AUTHORIZED else 0,
            captured_minor=captured if status is PaymentStatus.CAPTURED else 0,
            currency=CURRENCY,
            message=fields["TRANS_STAT"],
            raw=fields,
        )

    # -- capture (PostAuth of a pre-authorization the callback did not capture)

    def capture(self, merchant_reference: str, amount: Money) -> GatewayResult:
        """PostAuth: capture an open pre-authorization; refused when there is none."""
        ref = merchant_reference
        self._check_reference(ref)
        self._check_money(amount)
        fields = self._api(
            {"Type": "PostAuth", "OrderId": ref, "Total": format_amount(amount.amount_minor)}
        )
        if fields.get("Response") != "Approved":
            raise GatewayRefused(f"CMI refused the capture of {ref}: {fields.get('ErrMsg', '')}")
        return self.get_status(ref)

    # -- refund

    def refund(
        self, merchant_reference: str, amount: Money, refund_reference: str
    ) -> GatewayResult:
        """Credit: refund part of a captured order; one ``refund_reference`` refunds once here."""
        ref = merchant_reference
        self._check_reference(ref)
        self._check_money(amount)
        if not is_valid_order_id(refund_reference):
            raise GatewayRefused("refund_reference: letters, digits, - and _, at most 64")
        return self._refunds.once(refund_reference, ref, amount, lambda: self._credit(ref, amount))

    def _credit(self, ref: str, amount: Money) -> GatewayResult:
        fields = self._api(
            {
                "Type": "Credit",
                "OrderId": ref,
                "Total": format_amount(amount.amount_minor),
                "Currency": CURRENCY_CODE,
            }
        )
        if fields.get("Response") != "Approved":
            raise GatewayRefused(f"CMI refused the refund of {ref}: {fields.get('ErrMsg', '')}")
        return GatewayResult(
            status=PaymentStatus.CAPTURED,
            merchant_reference=ref,
            gateway_reference=fields.get("TransId", ""),
            refunded_minor=amount.amount_minor,
            currency=CURRENCY,
            message=fields.get("Response", ""),
            raw=fields,
        )

    # -- not supported by the hosted page

    def authorize(self, request: PaymentRequest) -> GatewayResult:
        raise GatewayRefused("CMI (hosted page) pre-authorizes only through purchase")

    def void(self, merchant_reference: str) -> GatewayResult:
        raise GatewayRefused("CMI adapter does not void")

    # -- helpers

    @staticmethod
    def _check_reference(ref: str) -> None:
        if not is_valid_order_id(ref):
            raise GatewayRefused(f"CMI order ids are letters, digits, - and _, 1 to 64: {ref!r}")

    @staticmethod
    def _check_money(amount: Money) -> None:
        check_money(amount, CURRENCY, "CMI")

    def _api(
        self, fields: Mapping[str, str], extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """POST one CC5Request; GatewayOutcomeUnknown on timeout or an unreadable answer."""
        credentials = {
            "Name": self._api_name,
            "Password": self._api_password,
            "ClientId": self._client_id,
        }
        what = fields.get("Type", "ORDERSTATUS")
        body = post(
            f"{self._base_url}{API_PATH}",
            cc5_request({**credentials, **fields}, extra).encode("utf-8"),
            "text/xml; charset=utf-8",
            self._timeout,
            f"CMI {what} for {fields.get('OrderId')}",
        )
        parsed = parse_cc5_response(body)
        if "Response" not in parsed and "ProcReturnCode" not in parsed:
            raise GatewayOutcomeUnknown(f"unreadable CMI answer to {what}")
        return parsed


def from_settings(settings: Mapping[str, str]) -> CmiGateway:
    """The entry-point factory (``policy_ledger.payment_gateways``: ``cmi``).

    Keys: ``base_url`` (e.g. ``https://testpayment.cmi.co.ma``), ``client_id``, ``store_key``,
    ``api_name``, ``api_password`` (the XML API user), ``shop_url``, ``ok_url``, ``fail_url``,
    and optionally ``timeout_seconds`` (default 10) and ``language`` (``fr``, ``ar`` or ``en``,
    default ``fr``).
    """
    required = (
        "base_url",
        "client_id",
        "store_key",
        "api_name",
        "api_password",
        "shop_url",
        "ok_url",
        "fail_url",
    )
    missing = [key for key in required if not settings.get(key)]
    if missing:
        raise ValueError(f"cmi settings missing: {', '.join(missing)}")
    timeout = timeout_setting(settings, "cmi")
    return CmiGateway(
        base_url=settings["base_url"],
        client_id=settings["client_id"],
        store_key=settings["store_key"],
        api_name=settings["api_name"],
        api_password=settings["api_password"],
        shop_url=settings["shop_url"],
        ok_url=settings["ok_url"],
        fail_url=settings["fail_url"],
        timeout_seconds=timeout,
        language=settings.get("language", "fr"),
    )

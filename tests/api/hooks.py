"""What the OpenAPI documents cannot say, told to Schemathesis's generator (tests/api/run.sh).

A schema describes one field at a time. A few rules of the shop span fields or depend on stored
state; cases that break them are not "valid requests the service refused", so the generator is
told about them here. Each hook names the rule and where it lives. Nothing here relaxes a check.
"""

import base64
import datetime
import hashlib
import hmac
import os
import time

import schemathesis
from hypothesis import strategies as st

# --- `format: card-number`: 13 to 19 digits passing the Luhn check (contracts' payment.rs) ---


def _luhn_check_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # every second digit from the right, counting the check digit's place
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


@st.composite
def _card_numbers(draw):
    length = draw(st.integers(min_value=13, max_value=19))
    body = draw(st.text(alphabet="0123456789", min_size=length - 1, max_size=length - 1))
    return body + _luhn_check_digit(body)


schemathesis.openapi.format("card-number", _card_numbers())

# --- the categories a product lists must exist (catalog): the seeded slugs, from run.sh ---

CATEGORIES = [c for c in os.environ.get("SHOP_API_CATEGORIES", "").split(",") if c]
NIL_UUID = "00000000-0000-0000-0000-000000000000"


def _expired(card: dict) -> bool:
    """A card is valid through the end of its expiry month (contracts' payment.rs)."""
    year, month = card.get("exp_year"), card.get("exp_month")
    if not (isinstance(year, (int, float)) and isinstance(month, (int, float))):
        return False
    today = datetime.date.today()
    return (year, month) < (today.year, today.month)


def _weight(items: list) -> float:
    """The parcel's weight (contracts' shipping.rs: 500 g a unit unless given)."""
    total = 0
    for item in items:
        if not isinstance(item, dict):
            return 0
        quantity, weight = item.get("quantity"), item.get("weight_grams")
        if weight is None:
            weight = 500
        if not isinstance(quantity, (int, float)) or not isinstance(weight, (int, float)):
            return 0
        total += quantity * weight
    return total


def _positive(case) -> bool:
    meta = getattr(case, "meta", None)
    mode = getattr(getattr(meta, "generation", None), "mode", None)
    return mode is None or str(getattr(mode, "value", mode)) == "positive"


def _breaks_a_cross_field_rule(case) -> bool:
    body = case.body if isinstance(case.body, dict) else {}
    query = case.query if isinstance(case.query, dict) else {}
    # Cursors are opaque: only the API makes them (`next_cursor`), so a made-up one is a 400.
    if "cursor" in query:
        return True
    # Another user's messages or the administrators', not both at once (notification).
    if query.get("audience") == "admins" and "user_id" in query:
        return True
    # Ids must not be the nil UUID (inventory, payment, shipping).
    if NIL_UUID in (body.get("order_id"), body.get("user_id")):
        return True
    items = body.get("items")
    if isinstance(items, list):
        # Each product once, with its total quantity (inventory, shipping).
        ids = [str(i.get("product_id")) for i in items if isinstance(i, dict)]
        if len(ids) != len(set(ids)):
            return True
        # Not freight: 1,000 kg at most in one parcel (shipping).
        if _weight(items) > 1_000_000:
            return True
    for card in (body.get("card"), body.get("payment")):
        if isinstance(card, dict) and _expired(card):
            return True
    # A charge or refund is for more than nothing (payment; a price may be 0).
    amount = body.get("amount")
    if case.operation.path.startswith("/internal/charges") and isinstance(amount, dict) and amount.get("amount") == 0:
        return True
    return False


@schemathesis.hook
def filter_case(context, case):
    # Only valid cases are held to the rules above; an invalid case stays invalid either way.
    return not (_positive(case) and _breaks_a_cross_field_rule(case))


_KEYS = iter(range(1 << 62))


def _service_token(audience: str) -> str:
    """A token of the order service for `audience`'s internal API, signed with shop up's key,
    as shop_kit::identity mints it: `v1:caller:audience:expiry:` and the HMAC-SHA256."""
    key = base64.b64decode(os.environ["SHOP_SERVICE_KEY"])
    claims = f"v1:order:{audience}:{int(time.time()) + 60}"
    signature = hmac.new(key, claims.encode(), hashlib.sha256).digest()
    return f"{claims}:{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


@schemathesis.hook
def before_call(context, case, kwargs):
    # The internal APIs answer only a service of the installation: every call to them is made
    # as the order service, the one caller every internal operation allows (run.sh says which
    # service is under test).
    audience = os.environ.get("SHOP_API_SERVICE")
    if audience and case.operation.path.startswith("/internal/"):
        if case.headers is None:
            case.headers = {}
        case.headers["shop-service-token"] = _service_token(audience)
    # A new request needs a new Idempotency-Key: the same key with another body is a 422 by
    # design (order, payment). Valid cases get a key of their own (also in the stateful phase,
    # which sends its steps without the case hooks); invalid ones keep theirs.
    headers = case.headers if case.headers is not None else {}
    for name in list(headers):
        if name.lower() == "idempotency-key" and _positive(case) and isinstance(headers[name], str):
            headers[name] = f"contract-{next(_KEYS)}-{headers[name]}"[:255]


@schemathesis.hook
def map_case(context, case):
    # A product's categories name existing ones: put a seeded slug where the generator wrote a
    # string (a non-string or a wrong count stays as generated, still invalid).
    body = case.body
    if CATEGORIES and isinstance(body, dict) and isinstance(body.get("categories"), list):
        body["categories"] = [
            CATEGORIES[len(c) % len(CATEGORIES)] if isinstance(c, str) else c for c in body["categories"]
        ]
    return case

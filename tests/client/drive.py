"""Drives textcredits through a client generated from its /openapi.json by
openapi-python-client, as a platform engineer would (tests/suite/client.rs
generates the client and runs this). Usage: drive.py BASE_URL ADMIN_TOKEN
DIR_WITH_textcredits_client. Exits non-zero with a message on the first
thing that is not as documented."""

import sys

base, token, where = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, where)

from textcredits_client import AuthenticatedClient  # noqa: E402
from textcredits_client.api.accounts import create_account, get_balance  # noqa: E402
from textcredits_client.api.purchases import create_purchase, list_purchases  # noqa: E402
from textcredits_client.api.spending import (  # noqa: E402
    capture_hold,
    create_debit,
    create_hold,
    get_debit,
    refund_debit,
)
from textcredits_client.models import (  # noqa: E402
    CaptureBody,
    CreditsBody,
    DebitBody,
    HoldBody,
    NewAccount,
    Problem,
    PurchaseBody,
    PurchaseView,
)


def expect(what, ok):
    if not ok:
        sys.exit(f"generated client: {what}")


# `credits` shadows a Python builtin, so the generator names it `credits_`.
client = AuthenticatedClient(base_url=base, token=token, raise_on_unexpected_status=True)

# An account.
r = create_account.sync_detailed(client=client, body=NewAccount(id="gen-1", name="Generated Cafe", time_zone="UTC"))
expect(f"create account answered {r.status_code}", r.status_code == 201)
expect("the account's id", r.parsed.id == "gen-1")
expect("Location of the account", r.headers.get("location") == "/v1/accounts/gen-1")

# A purchase, typed.
r = create_purchase.sync_detailed("gen-1", client=client, body=PurchaseBody(credits_=500), idempotency_key="gen-p1")
expect(f"purchase answered {r.status_code}", r.status_code == 201)
expect("purchase amount is the currency's decimals", r.parsed.amount == "5.00" and r.parsed.currency == "USD")
expect("purchase status", r.parsed.status == "unbilled")

# A debit with a key, and its replay.
body = DebitBody(credits_=120, reference="campaign-7")
first = create_debit.sync_detailed("gen-1", client=client, body=body, idempotency_key="gen-d1")
expect(f"debit answered {first.status_code}", first.status_code == 201)
again = create_debit.sync_detailed("gen-1", client=client, body=body, idempotency_key="gen-d1")
expect("the replay answers the first debit", again.status_code == 201 and again.parsed.id == first.parsed.id)
expect("the replay says so", again.headers.get("idempotent-replayed") == "true")
balance = get_balance.sync("gen-1", client=client)
expect(f"one debit, not two: available {balance.available}", balance.available == 1000 + 500 - 120)

# Short: 402 with what is available and what is missing, parsed as a Problem.
r = create_debit.sync_detailed("gen-1", client=client, body=DebitBody(credits_=5000), idempotency_key="gen-d2")
expect(f"a debit beyond the balance answered {r.status_code}", r.status_code == 402)
expect("the 402 is a Problem", isinstance(r.parsed, Problem))
extra = r.parsed.to_dict()
expect(f"the 402's code and numbers: {extra}", str(extra["code"]) == "insufficient_credits" and extra["available"] == 1380 and extra["shortfall"] == 3620)

# A hold, captured: the capture is a debit, refundable.
h = create_hold.sync("gen-1", client=client, body=HoldBody(credits_=300, reference="campaign-8"), idempotency_key="gen-h1")
# Path parameters come in path order: the account, then the hold.
c = capture_hold.sync_detailed("gen-1", h.id, client=client, body=CaptureBody(credits_=250))
expect(f"capture answered {c.status_code}", c.status_code == 200)
expect("the capture names its debit", isinstance(c.parsed.debit_id, str))
d = get_debit.sync("gen-1", c.parsed.debit_id, client=client)
expect("the capture's debit names the hold", d.hold_id == h.id and d.credits_ == 250)
r = refund_debit.sync_detailed("gen-1", d.id, client=client, body=CreditsBody(credits_=40), idempotency_key="gen-r1")
expect(f"refund of the capture answered {r.status_code}", r.status_code == 201)

# A list page, typed.
page = list_purchases.sync("gen-1", client=client)
expect("the purchase list", len(page.data) == 1 and page.next_cursor is None)
# The page's items are the purchase's own class (the page refers to its schema).
expect(f"a page item is a PurchaseView: {type(page.data[0])}", isinstance(page.data[0], PurchaseView))
print("generated client: ok")

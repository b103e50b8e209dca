"""Schemathesis hooks for the contract test (tests/suite/contract.rs).

Idempotency keys: schemathesis draws few distinct keys (`0`, `00`), so most
writes would replay an earlier request or answer 409 for a key used with
another body, and the run would test little else. The key of a valid
request gets a suffix of its own, so each is a new operation; an invalid
request goes out as drawn (changing it would make schemathesis take it
for a valid one).

Integers: OpenAPI 3.1 counts `2.0` as an integer, as JSON Schema does, and
schemathesis sends such spellings for integer fields of JSON bodies. The
server takes credits and counts only as JSON integers written without a
fraction (API.md "credits as JSON integers"; `1.0` is refused, see
tests/suite/http_input.rs), a rule no JSON Schema keyword can state. So every
whole float of a body goes out as the integer it spells, and the run tests
everything else about the value.
"""

import itertools
import re

import schemathesis

# IdempotencyKey in the OpenAPI document (src/http/openapi.rs).
_VALID_KEY = re.compile(r"[!-~]([ -~]*[!-~])?")
_MAX_KEY_BYTES = 255
_serial = itertools.count(1)


def _plain_integers(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain_integers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_integers(v) for v in value]
    return value


def _fresh_key(headers):
    for name, value in list(headers.items()):
        if name.lower() == "idempotency-key" and isinstance(value, str) and _VALID_KEY.fullmatch(value):
            suffix = f"-{next(_serial)}"
            headers[name] = value[: _MAX_KEY_BYTES - len(suffix)] + suffix


@schemathesis.hook
def before_call(context, case, kwargs):
    if isinstance(case.body, (dict, list, float)):
        case.body = _plain_integers(case.body)
    if case.headers and case.meta is not None and case.meta.generation.mode.is_positive:
        _fresh_key(case.headers)

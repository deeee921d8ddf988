"""Local JWTs and the principal built from claims (never from a request body)."""

from __future__ import annotations

import pytest

from ragline.auth import mint_token, principal_from_claims, verify_token
from ragline.errors import Unauthorized
from ragline.settings import Settings

S = Settings(home="/tmp/ragline-test-auth", jwt_secret="unit-test-secret-0123456789abcdef0123")


def test_round_trip():
    t = mint_token(S, "acme", "alice", ["board", "hr"])
    claims = verify_token(S, t)
    p = principal_from_claims(S, claims)
    assert (p.tenant, p.user, p.groups) == ("acme", "alice", frozenset({"board", "hr"}))


@pytest.mark.parametrize(
    "other,fragment",
    [
        ({"jwt_issuer": "someone-else"}, "issuer"),
        ({"jwt_audience": "another-api"}, "audience"),
        ({"jwt_secret": "different-secret-0123456789abcdef01234"}, "signature"),
    ],
)
def test_wrong_issuer_audience_or_key(other, fragment):
    t = mint_token(S.model_copy(update=other), "acme", "alice")
    with pytest.raises(Unauthorized) as exc:
        verify_token(S, t)
    assert fragment in exc.value.message


def test_expired():
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(S, mint_token(S, "acme", "alice", ttl_s=-5))


@pytest.mark.parametrize(
    "claims",
    [None, {}, {"sub": "alice"}, {"custom:tenant": "acme"}, {"custom:tenant": "../etc", "sub": "x"}],
)
def test_missing_or_bad_claims_refused(claims):
    with pytest.raises(Unauthorized):
        principal_from_claims(S, claims)


@pytest.mark.parametrize("raw", ['["a", "b"]', "[a b]", "a,b", ["a", "b"]])
def test_group_claim_shapes_from_api_gateway(raw):
    p = principal_from_claims(S, {"custom:tenant": "acme", "sub": "u", "cognito:groups": raw})
    assert p.groups == frozenset({"a", "b"})


@pytest.mark.parametrize("raw,groups", [
    ("[true]", {"true"}), ("[null]", {"null"}), ("[1e3]", {"1e3"}), ("[1.50 NaN]", {"1.50", "NaN"}),
    ("[true finance]", {"true", "finance"}),
])
def test_api_gateway_group_strings_are_names_never_json_values(raw, groups):
    # API Gateway writes the groups ["true"] as "[true]": JSON would make it True, str() "True",
    # a group the user does not hold (and the one they do hold lost)
    p = principal_from_claims(S, {"custom:tenant": "acme", "sub": "u", "cognito:groups": raw})
    assert p.groups == frozenset(groups)


def test_the_local_server_hands_claims_on_as_api_gateway_does():
    from ragline.server import http_event

    claims = {"custom:tenant": "acme", "sub": 12345, "cognito:groups": ["true", "finance"], "email_verified": True}
    got = http_event("GET", "/v1/documents?days=3&days=30", {}, b"", claims)
    c = got["requestContext"]["authorizer"]["jwt"]["claims"]
    assert c == {"custom:tenant": "acme", "sub": "12345", "cognito:groups": "[true finance]", "email_verified": "true"}
    assert got["queryStringParameters"] == {"days": "3,30"}  # repeated parameters joined, as API Gateway does
    p = principal_from_claims(S, c)
    assert p.user == "12345" and p.groups == frozenset({"true", "finance"})


def test_claim_names_are_configurable():
    s = S.model_copy(update={"claim_tenant": "org", "claim_groups": "roles"})
    p = principal_from_claims(s, {"org": "globex", "sub": "u", "roles": ["x"]})
    assert p.tenant == "globex" and p.groups == frozenset({"x"})


def test_invalid_names_cannot_be_minted():
    with pytest.raises(ValueError):
        mint_token(S, "acme|x", "alice")

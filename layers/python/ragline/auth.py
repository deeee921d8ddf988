"""Identity: the principal comes only from verified token claims.

In AWS the API Gateway JWT authorizer verifies the token and passes its claims in
``requestContext.authorizer.jwt.claims``; the handler builds the principal from those and
refuses a request without them. Locally, ``ragline serve`` verifies an HS256 token signed
with the secret under ``RAGLINE_HOME`` (signature, issuer, audience, expiry) and forwards its
claims the same way.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path
from typing import Any

from .errors import Unauthorized
from .models import Principal
from .settings import Settings

_NAME = re.compile(r"^[A-Za-z0-9][\w.@:+-]{0,127}\Z")  # \Z, not $: $ also matches before a final newline


def is_valid_name(value: object) -> bool:
    """A tenant, user-group or ACL name a verified identity can carry (what
    :func:`principal_from_claims` keeps): a document shared with any other name could never be
    seen by anyone, so ingestion refuses it."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def _secret(settings: Settings) -> str:
    if settings.jwt_secret:
        return settings.jwt_secret
    path = Path(settings.home_dir) / "jwt_secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def mint_token(settings: Settings, tenant: str, user: str, groups: list[str] | None = None,
               scopes: list[str] | None = None, ttl_s: int = 3600 * 12) -> str:
    import jwt

    for v, what in [(tenant, "tenant"), (user, "user"), *[(g, "group") for g in groups or []]]:
        if not _NAME.fullmatch(v):
            raise ValueError(f"invalid {what} name {v!r}: letters, digits and . _ - @ : + only")
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "iat": now, "exp": now + ttl_s,
        settings.claim_user: user, settings.claim_tenant: tenant,
        settings.claim_groups: list(groups or []),
    }
    if scopes:
        claims[settings.claim_scope] = " ".join(scopes)
    return jwt.encode(claims, _secret(settings), algorithm="HS256")


def verify_token(settings: Settings, token: str) -> dict[str, Any]:
    import jwt

    try:
        return jwt.decode(
            token, _secret(settings), algorithms=["HS256"], audience=settings.jwt_audience,
            issuer=settings.jwt_issuer, options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token has expired") from None
    except jwt.InvalidAudienceError:
        raise Unauthorized("the token is for another audience") from None
    except jwt.InvalidIssuerError:
        raise Unauthorized("the token was issued by an unknown issuer") from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("the token signature is invalid") from None
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"the token is invalid: {exc}") from None


def _as_list(value: Any) -> list[str]:
    """Groups arrive as a list, or (through API Gateway) as a string like ``[a b]`` or ``a,b``,
    or as a JSON array of strings. A bracketed string is JSON only when it is an array of
    strings: API Gateway writes the groups ``true``, ``null`` or ``1e3`` as ``[true null 1e3]``,
    which JSON would turn into other values (``True``, ``None``, ``1000.0``)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    s = str(value).strip()
    if s.startswith("[") and s.endswith("]"):
        try:
            parsed = json.loads(s)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(v, str) for v in parsed):
            return parsed
        s = s[1:-1]
    return [p for p in re.split(r"[\s,]+", s) if p]


def principal_from_claims(settings: Settings, claims: dict[str, Any] | None) -> Principal:
    if not claims:
        raise Unauthorized("the request carries no verified identity")
    tenant = claims.get(settings.claim_tenant)
    user = claims.get(settings.claim_user)
    if not tenant or not isinstance(tenant, str) or not _NAME.fullmatch(tenant):
        raise Unauthorized(f"the identity has no valid tenant claim ({settings.claim_tenant})")
    if not user or not isinstance(user, str):
        raise Unauthorized(f"the identity has no user claim ({settings.claim_user})")
    groups = frozenset(g for g in _as_list(claims.get(settings.claim_groups)) if _NAME.fullmatch(g))
    scopes = frozenset(_as_list(claims.get(settings.claim_scope)))
    return Principal(tenant=tenant, user=user, groups=groups, scopes=scopes)

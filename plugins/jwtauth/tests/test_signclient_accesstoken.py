"""``signpeer signdocument -accesstoken`` (SignServer signclient's option) against a worker with
the JWT authorizer, over both of signclient's transports (REST and ``/signserver/process``)."""

from __future__ import annotations

from typing import Any

GOOD = {"groups": ["signers"], "aud": "signpeer"}


def test_accesstoken_is_sent_as_a_bearer_token(home: Any, pki: Any, idp: Any, jwt_signer: Any, start_server: Any,
                                               signpeer: Any) -> None:
    jwt_signer(idp)
    start_server(home)
    token = idp.token(GOOD)
    for protocol in ("REST", "HTTP"):
        r = signpeer.in_process("signdocument", "-workername", "JwtSigner", "-data", "with a token",
                                "-accesstoken", token, "-protocol", protocol)
        assert r.code == 0 and len(r.out) > 60, r.err  # a PlainSigner signature
    refused = signpeer.in_process("signdocument", "-workername", "JwtSigner", "-data", "x",
                                  "-accesstoken", idp.token({**GOOD, "groups": ["staff"]}))
    assert refused.code == 254 and "HTTP 403" in refused.err, refused.err
    missing = signpeer.in_process("signdocument", "-workername", "JwtSigner", "-data", "x", "-protocol", "HTTP")
    assert missing.code == 254 and "HTTP 401" in missing.err, missing.err

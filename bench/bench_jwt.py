"""What the JWT authorizer costs a signing request (target: under 10 % of a PlainSigner P-256
request over REST), with the provider's keys cached.

In one run (the machine's noise hits every side alike):

1. in process: ``JwtAuthorizer.check_token`` with the JWKS cached (RS256 and ES256 providers):
   the median time of a full verification (the authorizer's memory of verified tokens cleared
   before each call: a token seen for the first time) and of a token it verified before (a
   client sending its token with many requests);
2. over REST (the load generator of ``bench_rest.py``: raw HTTP/1.1, kept-alive mutual-TLS
   connections), one ``signpeer serve`` process with two PlainSigner P-256 workers: ``NOAUTH``
   and ``AUTHTYPE=JWT`` (the client sends ``Authorization: Bearer``, one token reused as a real
   client does until it expires); rates and server CPU per request;
3. the ratios: verification time / server CPU of a NOAUTH request, and the extra server CPU of a
   JWT request over a NOAUTH one.

The provider is an HTTPS server on loopback serving its JWKS (``Cache-Control: max-age=3600``);
tokens are minted with joserfc.

    .venv/bin/python bench/bench_jwt.py [--seconds 4] [--connections 8] [--runs 3] [--verifications 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rest import measure  # noqa: E402
from joserfc import jwt as jose_jwt  # noqa: E402
from joserfc.jwk import ECKey, RSAKey  # noqa: E402

from signpeer_core.api import SignRequest  # noqa: E402
from signpeer_core.testing import ServerProcess, add_signer, make_pki, open_services, write_home  # noqa: E402


class JwksServer:
    def __init__(self, pki: Any, key: Any) -> None:
        body = json.dumps({"keys": [key.as_dict(private=False)]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "max-age=3600")
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(pki.server.pem), str(pki.server.key_pem))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.issuer = f"https://localhost:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def props(server: JwksServer, pki: Any) -> dict[str, str]:
    return {"AUTHTYPE": "JWT", "AUTHSERVER1.ISSUER": server.issuer, "AUTHSERVER1.JWKS_URL": server.issuer + "/jwks",
            "AUTHSERVER1.JWKS_CAFILE": str(pki.ca_pem), "AUTHJWT1.ISSUER": server.issuer,
            "AUTHJWT1.CLAIM.NAME": "groups", "AUTHJWT1.CLAIM.VALUE": "signers", "ACCEPTED_AUDIENCES": "signpeer"}


def token(server: JwksServer, key: Any, alg: str) -> str:
    now = int(time.time())
    claims = {"iss": server.issuer, "sub": "bench", "aud": "signpeer", "iat": now, "exp": now + 3600,
              "groups": ["staff", "signers"], "email": "bench@example.com"}
    return jose_jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key)


def verify_time(services: Any, worker: str, tok: str, n: int, first_time: bool) -> float:
    """Median seconds of one check_token, JWKS cached (fetched by a first call); ``first_time``:
    the memory of verified tokens is emptied before each call (a full verification)."""
    authorizer = services.runtime.get(worker).authorizer

    async def run() -> list[float]:
        await authorizer.check_token(SignRequest(b"", "warm"), tok)
        times = []
        for i in range(n):
            request = SignRequest(b"", str(i))
            if first_time:
                authorizer._verified.clear()  # the bench looks inside: a token never seen before
            t0 = time.perf_counter()
            await authorizer.check_token(request, tok)
            times.append(time.perf_counter() - t0)
        return times

    return statistics.median(asyncio.run(run()))


def http_request(path: str, body: bytes, bearer: str | None) -> bytes:
    auth = f"Authorization: Bearer {bearer}\r\n" if bearer else ""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}"
            f"X-Keyfactor-Requested-With: bench\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--verifications", type=int, default=3000)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="signpeer-bench-jwt-"))
    pki = make_pki(tmp / "pki")
    home = write_home(tmp / "home", pki)
    rsa_key = RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "alg": "RS256"})
    ec_key = ECKey.generate_key("P-256", parameters={"kid": "ec-1", "alg": "ES256"})
    rsa_idp, ec_idp = JwksServer(pki, rsa_key), JwksServer(pki, ec_key)
    services = open_services(home)
    add_signer(services, pki, "PlainSigner", keyalg="ECDSA", keyspec="secp256r1", AUTHTYPE="NOAUTH")
    add_signer(services, pki, "JwtSigner", keyalg="ECDSA", keyspec="secp256r1", **props(rsa_idp, pki))
    add_signer(services, pki, "JwtSignerEC", keyalg="ECDSA", keyspec="secp256r1", **props(ec_idp, pki))
    rsa_token, ec_token = token(rsa_idp, rsa_key, "RS256"), token(ec_idp, ec_key, "ES256")
    print(f"signpeer JWT authorizer benchmark: {os.cpu_count()} CPUs, {args.connections} connections, "
          f"{args.seconds:.0f} s x {args.runs} runs; token {len(rsa_token)} bytes (RS256), {len(ec_token)} (ES256)\n",
          flush=True)
    rs256 = verify_time(services, "JwtSigner", rsa_token, args.verifications, True)
    es256 = verify_time(services, "JwtSignerEC", ec_token, args.verifications, True)
    again = verify_time(services, "JwtSigner", rsa_token, args.verifications, False)
    services.close()
    print(f"check_token, JWKS cached, RS256-2048, new token:   median {rs256 * 1e6:7.1f} µs", flush=True)
    print(f"check_token, JWKS cached, ES256, new token:        median {es256 * 1e6:7.1f} µs", flush=True)
    print(f"check_token, a token verified before (remembered): median {again * 1e6:7.1f} µs\n", flush=True)

    ctx = ssl.create_default_context(cafile=str(pki.ca_pem))
    ctx.load_cert_chain(*pki.client.pair)
    body = json.dumps({"data": base64.b64encode(os.urandom(1024)).decode(), "encoding": "BASE64"}).encode()
    server = ServerProcess(home, (), {"SIGNPEER_LOG_LEVEL": "WARNING"}).start()
    try:
        path = "/signserver/rest/v1/workers/{}/process"
        plain = measure("PlainSigner P-256, NOAUTH", "127.0.0.1", server.port, ctx,
                        http_request(path.format("PlainSigner"), body, None), args.seconds, args.connections,
                        args.runs, server.proc.pid)
        jwt_rsa = measure("PlainSigner P-256, JWT RS256", "127.0.0.1", server.port, ctx,
                          http_request(path.format("JwtSigner"), body, rsa_token), args.seconds, args.connections,
                          args.runs, server.proc.pid)
        jwt_ec = measure("PlainSigner P-256, JWT ES256", "127.0.0.1", server.port, ctx,
                         http_request(path.format("JwtSignerEC"), body, ec_token), args.seconds, args.connections,
                         args.runs, server.proc.pid)
    finally:
        server.stop()

    print()
    base_cpu = plain["cpu"] / 1000  # seconds of server CPU per NOAUTH request
    for name, verify in (("RS256 new token", rs256), ("ES256 new token", es256), ("remembered token", again)):
        print(f"{name:<17} check_token / NOAUTH request server CPU: {verify / base_cpu * 100:5.1f} %  (target < 10 %)")
    for name, rest in (("RS256", jwt_rsa), ("ES256", jwt_ec)):
        print(f"{name} over REST (one token reused): extra server CPU over NOAUTH "
              f"{(rest['cpu'] / plain['cpu'] - 1) * 100:5.1f} %, rate {rest['rate'] / plain['rate']:.2f} of NOAUTH")


if __name__ == "__main__":
    main()

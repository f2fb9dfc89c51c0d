"""Run in a subprocess (SoftHSM2 reads SOFTHSM2_CONF once per process): one-time signing with
PKCS#11 session-object keys, with injected CA failures, timeouts and cancellations.

argv: home, module, token label, pin, requests, storage (SESSION/TOKEN). Prints a JSON summary.
"""

import asyncio
import json
import sys

from signpeer_core.testing import open_services
from signpeer_core.workers import SignRequest
from signpeer_onetimecrypto.connectors import CARefusedError
from signpeer_onetimecrypto.worker import close_pools

home, module, label, pin, count, storage = sys.argv[1:7]
services = open_services(home)
store = services.store
store.update_worker(1, {"NAME": "HSM", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                        "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "Pkcs11CryptoToken", "SHAREDLIBRARY": module,
                        "SLOTLABELTYPE": "TOKEN_LABEL", "SLOTLABELVALUE": label, "PIN": pin})
store.update_worker(2, {"NAME": "OneTime", "IMPLEMENTATION_CLASS": "OneTimeCryptoWorker", "CRYPTOTOKEN": "HSM",
                        "KEYALG": "ECDSA", "KEYSPEC": "secp256r1", "KEYSTORAGE": storage,
                        "CACONNECTOR_IMPLEMENTATION": "LocalCAConnector", "CACERTIFICATE_FILE": "onetime-ca.pem",
                        "CAKEY_FILE": "onetime-ca-key.pem", "CACONNECTOR_WAITTIMEOUT": "0.05",
                        "SUBJECTDN_PATTERN": "CN=${username},UID=${transactionId}"})
store.update_worker(3, {"NAME": "Signer", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "CMSSigner",
                        "CRYPTOTOKEN": "OneTime"})
services.runtime.load()
onetime = services.runtime.get("OneTime")
signer = services.runtime.get("Signer")
reasons = {n: services.runtime.get(n).status().reasons for n in ("HSM", "OneTime", "Signer")}
inner = onetime.connector


class Injecting:
    needs_private_key = False

    def __init__(self) -> None:
        self.n = 0

    async def request_certificate(self, request):
        self.n += 1
        if self.n % 5 == 1:
            raise CARefusedError("injected CA failure")
        if self.n % 5 == 2:
            await asyncio.sleep(5)  # beyond the 0.05 s wait timeout
        return await inner.request_certificate(request)

    def timeout_message(self, request, waited):
        return "injected timeout"

    def offline_reasons(self):
        return []


onetime.connector = Injecting()
outcomes: dict[str, int] = {}
signatures = []


async def one(i: int) -> None:
    req = SignRequest(data=f"doc {i}".encode(), request_id=f"p{i}", username="hsmuser")
    try:
        resp = await signer.process(req)
        outcomes["ok"] = outcomes.get("ok", 0) + 1
        if len(signatures) < 3:
            signatures.append((resp.data.hex(), req.data.decode()))
    except Exception as exc:  # every outcome is counted
        outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1


async def main() -> None:
    # Most requests 8 at a time: HSM calls from several threads at once (the module lock).
    normal = [i for i in range(int(count)) if i % 7 != 3]
    for start in range(0, len(normal), 8):
        await asyncio.gather(*(one(i) for i in normal[start:start + 8]))
    # Then the client goes away while the request waits for its certificate (one at a time,
    # so that the injected hang is the cancelled request's).
    for i in range(3, int(count), 7):
        onetime.connector.n = 1  # next call: hangs
        task = asyncio.ensure_future(signer.process(
            SignRequest(data=b"gone", request_id=f"c{i}", username="hsmuser")))
        await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            outcomes["cancelled"] = outcomes.get("cancelled", 0) + 1
    # A key whose generation was still running when its request was cancelled is deleted as
    # soon as it exists; a server keeps running, this script must give it the moment to. It waits
    # for that (on a loaded machine it takes longer); the 120 s are only a safety net.
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 120
    while onetime.source.live and loop.time() < give_up:
        await asyncio.sleep(0.05)


asyncio.run(main())
live = onetime.source.live
source_kind = type(onetime.source).__name__


def objects_in_session(session):
    # Session objects are visible only inside the process that made them: ask our own session.
    from pkcs11 import Attribute

    return [o[Attribute.LABEL] for o in session.get_objects({}) if str(o[Attribute.LABEL]).startswith("onetime-")]


in_session = services.runtime.get("HSM").token._run("listing objects", objects_in_session)
close_pools()
print(json.dumps({"reasons": reasons, "outcomes": outcomes, "live": live, "source": source_kind,
                  "in_session": in_session,
                  "signatures": signatures}))
sys.stdout.flush()
services.close()

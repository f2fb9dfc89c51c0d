"""Stress load for one process: threads signing with shared keys while others generate, use
and remove their own keys on the same token. Prints a JSON summary; exit status 0 when every
signature verified and nothing failed. Run by test_stress.py (in-process and as two processes).

The load runs for at least SECONDS and then until MIN_SIGNATURES signatures were made and
MIN_REMOVED generated keys removed (a loaded machine is slow, not wrong), at most GIVE_UP seconds.

Usage: python stress_child.py MODULE LABEL PIN PREFIX SECONDS SHARED_ALIAS[,SHARED_ALIAS...] [MIN_SIGNATURES MIN_REMOVED]
"""

from __future__ import annotations

import json
import sys
import threading
import time

from signpeer_core import keys
from signpeer_core.config import WorkerConfig
from signpeer_core.errors import KeyNotFoundError, SignpeerError
from signpeer_pkcs11token.token import Pkcs11CryptoToken

GIVE_UP = 300.0
HIDDEN_WAIT = 0.5  # how long a key this process generated may stay out of its sight before it counts as hidden


def run(module: str, label: str, pin: str, prefix: str, seconds: float, shared: list[str],
        signer_threads: int = 6, keygen_threads: int = 2, min_signatures: int = 0,
        min_removed: int = 0) -> dict[str, object]:
    props = {"NAME": f"Stress{prefix}", "SHAREDLIBRARY": module, "SLOTLABELVALUE": label, "PIN": pin}
    tokens = [Pkcs11CryptoToken(i, WorkerConfig(i, props), None) for i in (1, 2)]  # type: ignore[arg-type]
    for t in tokens:
        try:
            t.auto_activate()
        except SignpeerError:
            pass  # a passing SoftHSM2 failure while the other process writes: the token retries by itself
    started = time.monotonic()
    while not all(t.is_active for t in tokens):  # is_active is what triggers the token's retry
        if time.monotonic() - started > 120:
            raise SystemExit(f"the tokens did not activate: {[t.offline_reasons() for t in tokens]}")
        time.sleep(0.1)
    counts = {"signatures": 0, "generated": 0, "removed": 0, "removed_later": 0, "listed": 0, "listing_retries": 0,
              "signing_retries": 0}
    errors: list[str] = []  # crashes, wrong signatures, unexpected exceptions: always fatal
    token_errors: list[str] = []  # operations the token refused with a clear SignpeerError
    # Keys this process generated and then could not see (signing or listing) for HIDDEN_WAIT.
    # SoftHSM2's file store re-indexes a token when another process has written it, comparing a
    # directory listing with its list of files outside its token lock: an object this process
    # creates in between is taken for removed and dropped from its view until the next re-index,
    # which only another process's next write starts. Not ours to fix; the test bounds it and
    # checks that whatever a third process still sees afterwards is one of these keys.
    hidden: dict[str, str] = {}
    lock = threading.Lock()
    started = time.monotonic()

    def bump(name: str, n: int = 1) -> None:
        with lock:
            counts[name] += n

    def note_hidden(alias: str, where: str) -> None:
        with lock:
            hidden[alias] = where

    def running() -> bool:
        elapsed = time.monotonic() - started
        if elapsed < seconds:
            return True
        with lock:
            short = counts["signatures"] < min_signatures or counts["removed"] < min_removed
        return short and elapsed < GIVE_UP

    def check(token: Pkcs11CryptoToken, alias: str, data: bytes) -> None:
        key = token.private_key(alias)
        alg = keys.signature_algorithm(keys.default_signature_algorithm(key))
        sig = keys.sign(key, alg, data)
        keys.verify(key.public_key(), alg, sig, data)  # raises InvalidSignature on a wrong signature

    def signer(n: int) -> None:
        token = tokens[n % 2]
        i = 0
        try:
            while running():
                alias = shared[i % len(shared)]
                check(token, alias, b"%s %d %d" % (prefix.encode(), n, i))
                i += 1
                bump("signatures")
        except Exception as exc:
            errors.append(f"signer {n}: {type(exc).__name__}: {exc}")

    def used(token: Pkcs11CryptoToken, alias: str) -> bool:
        """Five signatures with a key just generated; False when the token hid it throughout.

        A wrong signature raises (fatal). SoftHSM2's file store, written by the other process at
        the same moment, can hide a fresh object from the process that made it (see ``hidden``
        below): when the token has dropped its cached handle meanwhile (a session reopened after
        another thread's passing failure), the key's search finds nothing and the token says "no
        key" clearly. Looked for again until HIDDEN_WAIT has passed; still hidden, the key is
        counted as hidden and removed later like any leftover.
        """
        deadline = time.monotonic() + HIDDEN_WAIT
        while True:
            try:
                for j in range(5):
                    check(token, alias, b"%d" % j)
                return True
            except KeyNotFoundError:
                bump("signing_retries")
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        note_hidden(alias, "signing")
        return False

    def aliases(token: Pkcs11CryptoToken, alias: str) -> list[str] | None:
        """The token's listing, or None when the token refused it with a clear error: SoftHSM2's
        file store fails a search now and then while the other process writes, and the token
        gives up after its retries (counted as a token error for ``alias``, as a refused
        generation or removal is)."""
        try:
            return token.key_aliases()
        except SignpeerError as exc:
            token_errors.append(f"list {alias}: {exc.message}")
            return None

    def listed(token: Pkcs11CryptoToken, alias: str) -> bool:
        """Whether the token's listing shows a key just generated and used, looked for again until
        HIDDEN_WAIT has passed (the same SoftHSM2 race as in ``used``); False also when the token
        refused the listing."""
        deadline = time.monotonic() + HIDDEN_WAIT
        while True:
            found = aliases(token, alias)
            if found is None:
                return False
            if alias in found:
                break
            bump("listing_retries")
            if time.monotonic() > deadline:
                note_hidden(alias, "listing")
                return False
            time.sleep(0.05)
        bump("listed")
        return True

    def keygen(n: int) -> None:
        token = tokens[n % 2]
        i = 0
        leftovers: list[str] = []
        try:
            while running():
                alias = f"{prefix}-gen{n}-{i}"
                i += 1
                keyalg, spec = (("ECDSA", "secp256r1"), ("Ed25519", ""), ("ECDSA", "secp384r1"))[i % 3]
                try:
                    token.generate_key(alias, keyalg, spec)
                except SignpeerError as exc:
                    # A token operation refused with a clear error is not a crash: SoftHSM2's file
                    # store fails now and then while another process writes. Counted, bounded by
                    # the test; anything half made is cleaned up below.
                    token_errors.append(f"generate {alias}: {exc.message}")
                    leftovers.append(alias)
                    continue
                bump("generated")
                if not used(token, alias):
                    leftovers.append(alias)
                    continue
                bump("signatures", 5)
                if not listed(token, alias):
                    leftovers.append(alias)
                    continue
                try:
                    token.remove_key(alias)
                    bump("removed")
                except SignpeerError as exc:
                    token_errors.append(f"remove {alias}: {exc.message}")
                    leftovers.append(alias)
        except Exception as exc:
            errors.append(f"keygen {n}: {type(exc).__name__}: {exc}")
        for alias in leftovers:  # whatever a refused operation left behind must still go
            for _attempt in range(10):
                try:
                    token.remove_key(alias)
                    bump("removed_later")
                    break
                except KeyNotFoundError:
                    found = aliases(token, alias)
                    if found is not None and alias not in found:
                        break  # never made, or gone
                except SignpeerError:
                    pass
                time.sleep(0.2)
            else:
                errors.append(f"keygen {n}: could not remove {alias}")

    threads = [threading.Thread(target=signer, args=(n,)) for n in range(signer_threads)]
    threads += [threading.Thread(target=keygen, args=(n,)) for n in range(keygen_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t in tokens:
        t.close()
    return {**counts, "errors": errors, "token_errors": token_errors, "hidden": hidden}


if __name__ == "__main__":
    module, label, pin, prefix, seconds, shared = sys.argv[1:7]
    min_signatures, min_removed = (int(v) for v in (sys.argv[7:9] or ["0", "0"]))
    result = run(module, label, pin, prefix, float(seconds), shared.split(","), min_signatures=min_signatures,
                 min_removed=min_removed)
    print(json.dumps(result))
    sys.exit(1 if result["errors"] else 0)

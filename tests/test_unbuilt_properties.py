"""A published change of properties no build reads (``UNBUILT_PROPERTIES``: a renewal's
``NEXTCERTSIGNKEY``) puts a copy of the loaded worker with the new configuration in its place
instead of building it again (signpeer_core/runtime.py, ``Runtime.reload_workers``); so does such a
change another process published, once the worker's kept token has re-read its keys. Any other
change and an explicit reload still build it."""

from __future__ import annotations

from typing import Any

from signpeer_core.admin import WorkerAdmin
from signpeer_core.audit import Admin
from signpeer_core.config import WorkerConfig
from signpeer_core.runtime import only_unbuilt_changes
from signpeer_core.testing import PKI, add_signer


def test_a_next_key_swaps_in_a_copy_and_other_changes_build(services: Any, pki: PKI) -> None:
    wid = add_signer(services, pki, "Renewed", AUTHTYPE="NOAUTH")
    runtime = services.runtime
    runtime.load()
    admin = WorkerAdmin(services, Admin("tests"))
    before, builds = runtime.get("Renewed"), runtime.builds

    alias = admin.next_key("Renewed", publish=True).alias
    after = runtime.get("Renewed")
    assert runtime.builds == builds  # not built again
    assert after is not before and type(after) is type(before)  # a new object: per-worker caches are made again
    assert after.config.get_str("NEXTCERTSIGNKEY") == alias and not before.config.get_str("NEXTCERTSIGNKEY")
    assert after.config == WorkerConfig(wid, services.store.worker_properties(wid))  # what the store holds
    assert after.token is before.token and after.chain == before.chain and not after.fatal_errors
    assert runtime.by_name["renewed"] is after and runtime.by_id[wid] is after
    assert after.status().active, after.status().reasons
    assert runtime.generation == services.store.config_generation()  # current: the poller rebuilds nothing

    admin.update_worker(wid, {"NEXTCERTSIGNKEY": alias + "x", "SIGNATUREALGORITHM": "SHA384withECDSA"}, publish=True)
    assert runtime.builds == builds + 1  # another property with it: built
    runtime.reload_workers([wid], configs={wid: runtime.get(wid).config})  # reload <worker>: unchanged, built
    assert runtime.builds == builds + 2
    # Another process's change (read from the store here): a copy too, once the kept token has re-read
    # its keystore (same_configuration; plugins/softtoken/tests/test_keystore_reads.py shows the new key).
    services.store.update_worker(wid, {"NEXTCERTSIGNKEY": alias})
    kept = runtime.get(wid)
    runtime.reload_workers([wid], caught_up=True)  # as reload_if_behind catches up
    assert runtime.builds == builds + 2 and runtime.get(wid).config.get_str("NEXTCERTSIGNKEY") == alias
    assert runtime.get(wid) is not kept and runtime.get(wid).token is kept.token
    assert kept.token.config.get_str("NEXTCERTSIGNKEY") == alias  # the token took the new configuration


def test_only_unbuilt_changes() -> None:
    base = WorkerConfig(1, {"NAME": "A", "DEFAULTKEY": "k1"})
    assert only_unbuilt_changes(base, WorkerConfig(1, {"NAME": "A", "DEFAULTKEY": "k1", "NEXTCERTSIGNKEY": "k2"}))
    assert only_unbuilt_changes(WorkerConfig(1, {"NAME": "A", "DEFAULTKEY": "k1", "NEXTCERTSIGNKEY": "k2"}), base)
    assert not only_unbuilt_changes(base, base)
    assert not only_unbuilt_changes(base, WorkerConfig(1, {"NAME": "A", "DEFAULTKEY": "k2", "NEXTCERTSIGNKEY": "k2"}))
    assert not only_unbuilt_changes(base, WorkerConfig(2, {"NAME": "A", "DEFAULTKEY": "k1", "NEXTCERTSIGNKEY": "k2"}))


def test_a_next_key_of_a_worker_whose_token_worker_is_rebuilt_in_the_same_reload_gets_the_new_token(
        services: Any) -> None:
    """One reload covering a crypto worker whose token changes and a signer using that token whose
    only change is NEXTCERTSIGNKEY: the signer is built with the crypto worker's new token, not
    copied with the old one (which the reload closes)."""
    from signpeer_core.testing import MEMORY_TOKEN

    store, runtime = services.store, services.runtime
    store.update_worker(901, {"NAME": "SharedTok", "TYPE": "CRYPTO_WORKER", "IMPLEMENTATION_CLASS": "CryptoWorker",
                              "CRYPTOTOKEN_IMPLEMENTATION_CLASS": MEMORY_TOKEN, "KEYSTOREPASSWORD": "secret123"})
    store.update_worker(902, {"NAME": "UsesShared", "IMPLEMENTATION_CLASS": "PlainSigner", "CRYPTOTOKEN": "SharedTok",
                              "DEFAULTKEY": "k1"})
    runtime.load()
    old_token = runtime.get("SharedTok").token
    assert runtime.get("UsesShared").token is old_token
    crypto = WorkerConfig(901, {**store.worker_properties(901), "KEYSTOREPASSWORD": "another123"})
    signer = WorkerConfig(902, {**store.worker_properties(902), "NEXTCERTSIGNKEY": "k2"})
    store.update_worker(901, {"KEYSTOREPASSWORD": "another123"})
    store.update_worker(902, {"NEXTCERTSIGNKEY": "k2"})

    runtime.reload_workers([901, 902], configs={901: crypto, 902: signer})

    new_token = runtime.get("SharedTok").token
    assert new_token is not old_token
    uses = runtime.get("UsesShared")
    assert uses.token is new_token  # not the replaced one
    assert uses.config.get_str("NEXTCERTSIGNKEY") == "k2"


def test_a_reload_asked_for_here_builds_even_when_only_a_next_key_is_staged(services: Any, pki: PKI) -> None:
    """``generatenextkey`` (staged) and then ``reload <worker>``: this process's reload builds the
    worker (what a reload promises); only a change another process published is followed by a copy."""
    wid = add_signer(services, pki, "Staged", AUTHTYPE="NOAUTH")
    runtime = services.runtime
    runtime.load()
    admin = WorkerAdmin(services, Admin("tests"))
    admin.generate_next_key("Staged")  # staged: in the store, not in the loaded configuration
    builds = runtime.builds
    admin.reload("Staged")
    assert runtime.builds == builds + 1
    assert runtime.get(wid).config.get_str("NEXTCERTSIGNKEY")


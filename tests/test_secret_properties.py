"""Secret properties: masked whether a plugin declares them or their name looks like a secret
(issue 11, item 21)."""

from __future__ import annotations

import types

import pytest

from signpeer_core import hookimpl
from signpeer_core.audit import config_diff, is_secret_key
from signpeer_core.plugins import Registry, get_plugin_manager
from signpeer_core.testing import MemoryCryptoToken
from signpeer_core.tokens import PropertyDoc

LOOKS_SECRET = ["KEYSTOREPASSWORD", "KEYSTOREPASS", "PASSWD", "MY_API_TOKEN", "PIN", "SLOT_PIN", "API_KEY",
                "GLOB.SMTP_SECRET", "CAKEY_PASSWORD", "PRIVATEKEY", "AUTHCODE", "DB_CREDENTIALS", "PASSPHRASE"]
NOT_SECRET = ["KEYSTOREPATH", "KEYSTORETYPE", "DEFAULTKEY", "NEXTCERTSIGNKEY", "CRYPTOTOKEN",
              "CRYPTOTOKEN_IMPLEMENTATION_CLASS", "KEYALG", "KEYSPEC", "AUTHTYPE", "SLOTLABELVALUE",
              "SIGNERCERTCHAIN", "GLOB.WSADMINS", "NAME", "KEYGENERATIONLIMIT"]


@pytest.mark.parametrize("key", LOOKS_SECRET)
def test_names_that_look_secret_are_masked(key: str) -> None:
    assert is_secret_key(key)
    assert config_diff({}, {key: "s3cret"}, ()) == {f"added:{key}": "********"}


@pytest.mark.parametrize("key", NOT_SECRET)
def test_ordinary_names_are_shown(key: str) -> None:
    assert not is_secret_key(key)


def test_a_plugin_declares_its_secret_properties() -> None:
    class VaultToken(MemoryCryptoToken):
        type_name = "VaultTokenForSecretTest"

        properties = (PropertyDoc("VAULT_ROLE", "—", "the role"),
                      PropertyDoc("UNSEALPHRASE_OF_VAULT", "—", "opens the vault", secret=True))

    @hookimpl
    def signpeer_crypto_token_types() -> list[type]:
        return [VaultToken]

    assert not is_secret_key("UNSEALPHRASE_OF_VAULT")
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(types.SimpleNamespace(signpeer_crypto_token_types=signpeer_crypto_token_types), name="vault")
    Registry(pm)
    assert is_secret_key("UNSEALPHRASE_OF_VAULT") and is_secret_key("GLOB.UNSEALPHRASE_OF_VAULT")
    assert not is_secret_key("VAULT_ROLE")


def test_a_registry_that_loads_types_on_first_use_declares_them_before_the_first_secret_check() -> None:
    """The CLI's registry imports the plugins' classes when first needed; a secret check (masking,
    sealing a stored value) must still know every plugin's declared secrets."""
    loaded: list[str] = []

    class LateToken(MemoryCryptoToken):
        type_name = "LateTokenForSecretTest"

        properties = (PropertyDoc("LATE_UNLOCKWORD", "—", "opens it", secret=True),)

    @hookimpl
    def signpeer_crypto_token_types() -> list[type]:
        loaded.append("tokens")
        return [LateToken]

    pm = get_plugin_manager(load_entry_points=False)
    pm.register(types.SimpleNamespace(signpeer_crypto_token_types=signpeer_crypto_token_types), name="late")
    registry = Registry(pm, load_types=False)
    assert loaded == []
    assert is_secret_key("LATE_UNLOCKWORD")
    assert loaded == ["tokens"]
    assert registry.token_types.get("LateTokenForSecretTest", "x") is LateToken
    assert loaded == ["tokens"]  # once

"""The plugin API's own rules: its version, plugin-declared hooks, names a subclass inherits,
per-plugin state, and the declared token capabilities."""

from __future__ import annotations

import types

import pluggy
import pytest

from signpeer_core import API_VERSION, api
from signpeer_core.errors import PluginError
from signpeer_core.plugins import Registry, get_plugin_manager


def _plugin(name: str, **attrs: object) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


def test_api_exports_exist_and_are_sorted_by_concept() -> None:
    missing = [name for name in api.__all__ if not hasattr(api, name)]
    assert missing == []
    assert len(set(api.__all__)) == len(api.__all__)
    assert api.API_VERSION == API_VERSION


@pytest.mark.parametrize("wanted", ["1.0", API_VERSION])
def test_plugin_written_for_this_api_loads(wanted: str) -> None:
    pm = get_plugin_manager(load_entry_points=False, extra=(("fits", _plugin("fits", SIGNPEER_API_VERSION=wanted)),))
    assert pm.has_plugin("fits")


@pytest.mark.parametrize(("wanted", "advice"), [
    ("1.99", "upgrade signpeer-core"),
    ("2.0", "upgrade signpeer-core"),
    ("0.9", "upgrade needs-old to a release written for plugin API 1.x"),
])
def test_plugin_for_another_api_is_refused_with_what_to_upgrade(wanted: str, advice: str) -> None:
    with pytest.raises(PluginError) as info:
        get_plugin_manager(load_entry_points=False,
                           extra=(("needs-old", _plugin("needs-old", SIGNPEER_API_VERSION=wanted)),))
    message = info.value.message
    assert f"needs signpeer plugin API {wanted}" in message
    assert f"provides plugin API {API_VERSION}" in message
    assert advice in message and "SIGNPEER_DISABLED_PLUGINS=needs-old" in message


def test_malformed_api_version_is_refused() -> None:
    with pytest.raises(PluginError, match="must be 'major.minor'"):
        get_plugin_manager(load_entry_points=False, extra=(("odd", _plugin("odd", SIGNPEER_API_VERSION="one")),))


def test_subclass_of_a_builtin_signer_registers_under_its_own_name_only() -> None:
    class MySigner(api.PlainSigner):
        type_name = "MySigner"

    @api.hookimpl
    def signpeer_worker_types() -> list[type]:
        return [MySigner]

    pm = get_plugin_manager(load_entry_points=False,
                            extra=(("mine", _plugin("mine", signpeer_worker_types=signpeer_worker_types)),))
    registry = Registry(pm)
    assert registry.worker_types.get("MySigner", "IMPLEMENTATION_CLASS") is MySigner
    # PlainSigner's SignServer alias stays PlainSigner's.
    plain_alias = api.PlainSigner.implementation_aliases[0]
    assert registry.worker_types.get(plain_alias, "IMPLEMENTATION_CLASS") is api.PlainSigner


def test_subclass_without_its_own_type_name_is_refused_clearly() -> None:
    class Nameless(api.PlainSigner):
        pass

    @api.hookimpl
    def signpeer_worker_types() -> list[type]:
        return [Nameless]

    pm = get_plugin_manager(load_entry_points=False,
                            extra=(("nameless", _plugin("nameless", signpeer_worker_types=signpeer_worker_types)),))
    with pytest.raises(PluginError, match="inherits type_name 'PlainSigner' from its parent; give it a type_name"):
        Registry(pm)


def _declaring_plugin() -> types.ModuleType:
    specs = _plugin("greeting_specs")

    @api.hookspec
    def greeting_words(prefix: str) -> list[str]:
        """A hook declared by a plugin."""

    specs.greeting_words = greeting_words  # type: ignore[attr-defined]

    @api.hookimpl
    def signpeer_add_hookspecs(pluginmanager: pluggy.PluginManager) -> None:
        pluginmanager.add_hookspecs(specs)

    return _plugin("greeting", signpeer_add_hookspecs=signpeer_add_hookspecs)


def _implementing_plugin() -> types.ModuleType:
    @api.hookimpl(optionalhook=True)
    def greeting_words(prefix: str) -> list[str]:
        return [prefix + "hello"]

    return _plugin("words", greeting_words=greeting_words)


def test_a_plugin_declares_a_hook_another_implements() -> None:
    # The implementing plugin is registered first: the declaration still reaches it (historic hook).
    pm = get_plugin_manager(load_entry_points=False,
                            extra=(("words", _implementing_plugin()), ("greeting", _declaring_plugin())))
    registry = Registry(pm)
    assert registry.has_hook("greeting_words")
    assert registry.collect("greeting_words", prefix="> ") == ["> hello"]


def test_an_optional_implementation_loads_without_the_declaring_plugin() -> None:
    pm = get_plugin_manager(load_entry_points=False, extra=(("words", _implementing_plugin()),))
    registry = Registry(pm)
    assert not registry.has_hook("greeting_words")
    assert registry.collect("greeting_words", prefix="> ") == []


def test_per_plugin_state_is_one_object_per_services(tmp_path: object) -> None:
    from signpeer_core.services import Services

    class Hub:
        pass

    made: list[Hub] = []

    def factory() -> Hub:
        made.append(Hub())
        return made[-1]

    services = Services.__new__(Services)
    services._state = {}
    assert services.state_if_any(Hub) is None
    first = services.state(Hub, factory)
    assert services.state(Hub, factory) is first and services.state_if_any(Hub) is first
    assert len(made) == 1


def test_session_key_capability_is_a_declared_protocol() -> None:
    class WithSessionKeys:
        def generate_session_key(self, alias: str, keyalg: str, keyspec: str, token_object: bool = False) -> object:
            raise NotImplementedError

        def destroy_session_key(self, alias: str) -> None:
            raise NotImplementedError

    assert isinstance(WithSessionKeys(), api.SessionKeyToken)
    assert not isinstance(object(), api.SessionKeyToken)

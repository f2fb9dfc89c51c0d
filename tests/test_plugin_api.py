"""The plugin API's own rules: its version, plugin-declared hooks, names a subclass inherits,
per-plugin state, and the declared token capabilities."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import types
from pathlib import Path

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



def test_api_names_load_on_first_use_from_where_type_checkers_see_them() -> None:
    """api.py imports its names lazily (PEP 562); its TYPE_CHECKING imports must name the same
    object for each name, or mypy and the running code would disagree."""
    tree = ast.parse(Path(api.__file__).read_text(encoding="utf-8"))
    checked: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module
                for alias in imp.names:
                    checked[alias.asname or alias.name] = (imp.module, alias.name)
    eager = {"API_VERSION", "__version__", "hookimpl", "hookspec"}
    assert checked == api._LAZY
    assert set(checked) | eager == set(api.__all__)
    star: dict[str, object] = {}
    exec("from signpeer_core.api import *", star)  # every name in __all__ resolves through __getattr__
    assert set(api.__all__) <= set(star)
    assert all(star[name] is getattr(__import__(module, fromlist=[attr]), attr) for name, (module, attr) in checked.items())
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchName'"):
        api.NoSuchName  # noqa: B018


def test_importing_the_api_and_the_hook_markers_imports_no_heavy_library() -> None:
    """A plugin's registration module imports ``hookimpl`` from the API; that must not pull in the
    database, web or crypto libraries (each ``signpeer`` command would pay for them at start)."""
    code = ("import sys, signpeer_core.api\n"
            "from signpeer_core.api import hookimpl, hookspec, API_VERSION, SignpeerError, Command\n"
            "print(sorted(m for m in ('sqlalchemy', 'starlette', 'cryptography', 'httpx', 'asn1crypto', 'uvicorn')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

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



def test_the_cli_starts_without_the_libraries_its_command_does_not_use() -> None:
    """``signpeer --help`` builds every plugin's commands, but imports no database, web, HTTP client
    or PKCS#11 library, and no plugin's token, worker or authorizer class (start-up time)."""
    code = ("import sys\n"
            "from signpeer_core.cli.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = ('sqlalchemy', 'starlette', 'uvicorn', 'httpx', 'prometheus_client', 'pkcs11', 'jwt', 'alembic',\n"
            "         'signpeer_core.signers', 'signpeer_softtoken.token', 'signpeer_jwtauth.authorizer')\n"
            "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if k not in ("SIGNPEER_EXTRA_PLUGINS", "SIGNPEER_DISABLED_PLUGINS")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert "usage: signpeer" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_sign_request_keeps_its_dataclass_api() -> None:
    """SignRequest's written-out __init__ (it stores only what differs from a default) keeps
    what plugins use: the fields and their order, positional and keyword construction, the
    defaults, a fresh metadata dict per request, equality, repr, dataclasses.replace, and
    attributes of a plugin's own."""
    import dataclasses

    from signpeer_core.workers import SignRequest

    names = [f.name for f in dataclasses.fields(SignRequest)]
    assert names == ["data", "request_id", "metadata", "username", "client_certificate", "remote_address", "claims",
                     "client_issuer_key_id"]
    first, second = SignRequest(b"doc", "1"), SignRequest(data=b"doc", request_id="1")
    assert first == second and first.metadata == {} and first.metadata is not second.metadata
    assert (first.username, first.client_certificate, first.remote_address, first.claims,
            first.client_issuer_key_id) == (None, None, None, None, "")
    full = SignRequest(b"doc", "2", {"K": "V"}, "alice", None, "127.0.0.1", {"sub": "a"}, "ab12")
    assert full == SignRequest(data=b"doc", request_id="2", metadata={"K": "V"}, username="alice",
                               remote_address="127.0.0.1", claims={"sub": "a"}, client_issuer_key_id="ab12")
    assert full != SignRequest(b"doc", "2", {"K": "V"}, "alice", None, "127.0.0.1", {"sub": "a"})
    assert repr(first) == ("SignRequest(data=b'doc', request_id='1', metadata={}, username=None, "
                           "client_certificate=None, remote_address=None, claims=None, client_issuer_key_id='')")
    assert SignRequest(b"x", "3", metadata=None).metadata is None  # an explicit value is kept as given
    changed = dataclasses.replace(full, username=None)
    assert changed.username is None and changed.claims == {"sub": "a"} and full.username == "alice"
    first.username = "bob"
    first.plugin_note = "mine"  # type: ignore[attr-defined]
    assert first.username == "bob" and second.username is None and SignRequest.username is None
    assert first.plugin_note == "mine"  # type: ignore[attr-defined]

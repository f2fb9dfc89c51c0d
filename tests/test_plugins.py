"""The plugin system: entry-point discovery, failures that name the culprit, the blocklist,
duplicate type names, misspelt hooks, and a third-party plugin installed into a fresh venv."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from signpeer_core import hookimpl
from signpeer_core.errors import PluginError
from signpeer_core.plugins import Registry, disabled_plugin_names, get_plugin_manager

REPO = Path(__file__).resolve().parents[1]


def _fake_distribution(root: Path, name: str, version: str, entry_points: str, modules: dict[str, str]) -> None:
    """A real installed distribution on sys.path (dist-info + module), found by importlib.metadata."""
    dist = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text(entry_points)
    for mod, source in modules.items():
        (root / f"{mod}.py").write_text(textwrap.dedent(source))


def test_builtin_types_registered() -> None:
    registry = Registry(get_plugin_manager(load_entry_points=False))
    assert "CMSSigner" in registry.worker_types
    assert registry.worker_types.get("org.signserver.module.cmssigner.CMSSigner", "X").type_name == "CMSSigner"
    assert registry.infos["signpeer_core.builtin"].distribution == "signpeer-core"


def test_plugin_that_fails_to_import_names_its_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_distribution(tmp_path, "signpeer-broken", "1.2.3", "[signpeer]\nbroken = broken_plugin_mod\n",
                       {"broken_plugin_mod": "import no_such_module_anywhere\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as info:
        get_plugin_manager(disabled=set())
    message = str(info.value)
    assert "'broken'" in message and "signpeer-broken 1.2.3" in message and "no_such_module_anywhere" in message
    assert "SIGNPEER_DISABLED_PLUGINS=broken" in message
    # The blocklist lets the server start without it.
    pm = get_plugin_manager(disabled={"broken"})
    assert not pm.has_plugin("broken")


def test_disabled_plugin_names_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert disabled_plugin_names("a, b  c") == {"a", "b", "c"}
    monkeypatch.setenv("SIGNPEER_DISABLED_PLUGINS", "softtoken")
    assert disabled_plugin_names() == {"softtoken"}


def test_duplicate_type_names_name_both_plugins() -> None:
    class TokenA:
        type_name = "SameToken"

    class TokenB:
        type_name = "SameToken"

    def make(cls: type) -> types.SimpleNamespace:
        @hookimpl
        def signpeer_crypto_token_types() -> list[type]:
            return [cls]

        return types.SimpleNamespace(signpeer_crypto_token_types=signpeer_crypto_token_types)

    pm = get_plugin_manager(load_entry_points=False)
    pm.register(make(TokenA), name="plugin-a")
    pm.register(make(TokenB), name="plugin-b")
    with pytest.raises(PluginError, match="'SameToken' is registered by both plugin 'plugin-\\w' and plugin 'plugin-\\w'"):
        Registry(pm)



def test_a_hook_result_that_is_not_a_list_names_the_plugin() -> None:
    @hookimpl
    def signpeer_migrations() -> object:
        return 42

    pm = get_plugin_manager(load_entry_points=False)
    pm.register(types.SimpleNamespace(signpeer_migrations=signpeer_migrations), name="plugin-odd")
    with pytest.raises(PluginError, match="plugin 'plugin-odd': signpeer_migrations\\(\\) must return a list, not int"):
        Registry(pm).migration_sources()

def test_misspelt_hook_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_distribution(tmp_path, "signpeer-typo", "0.1", "[signpeer]\ntypo = typo_plugin_mod\n",
                       {"typo_plugin_mod": """
                            from signpeer_core import hookimpl

                            @hookimpl
                            def signpeer_worker_typez():
                                return []
                        """})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="unknown hook"):
        get_plugin_manager(disabled=set())


THIRD_PARTY_TOKEN = '''
"""A third-party crypto token: keys live in a JSON file of PEM strings (for the test only)."""
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from signpeer_core import hookimpl
from signpeer_core.errors import ConflictError, KeyNotFoundError
from signpeer_core.keys import generate_software_key, parse_key_spec
from signpeer_core.tokens import CryptoToken


class JsonFileToken(CryptoToken):
    type_name = "JsonFileToken"

    def __init__(self, worker_id, config, services):
        super().__init__(worker_id, config, services)
        self.path = services.settings.path(config.get_str("JSONFILE", "jsonkeys.json"))
        self.active = False

    def activate(self, code):
        self.active = True

    def auto_activate(self):
        self.active = True

    def deactivate(self):
        self.active = False

    @property
    def is_active(self):
        return self.active

    def _load(self):
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def key_aliases(self):
        return sorted(self._load())

    def generate_key(self, alias, keyalg, keyspec):
        data = self._load()
        if alias in data:
            raise ConflictError(alias)
        key = generate_software_key(parse_key_spec(keyalg, keyspec))
        data[alias] = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
        self.path.write_text(json.dumps(data))

    def remove_key(self, alias):
        data = self._load()
        if alias not in data:
            raise KeyNotFoundError(alias)
        del data[alias]
        self.path.write_text(json.dumps(data))

    def private_key(self, alias):
        data = self._load()
        if alias not in data:
            raise KeyNotFoundError(alias)
        return serialization.load_pem_private_key(data[alias].encode(), None)


@hookimpl
def signpeer_crypto_token_types():
    return [JsonFileToken]
'''

THIRD_PARTY_SCRIPT = '''
import asyncio, sys
from pathlib import Path
from signpeer_core import devpki
from signpeer_core.services import Services
from signpeer_core.settings import load_settings
from signpeer_core.certificates import encode_certificate_property
from signpeer_core.workers import SignRequest

home = Path(sys.argv[1])
services = Services.open(load_settings(home), load=False)
services.store.update_worker(1, {"NAME": "Signer", "TYPE": "PROCESSABLE", "IMPLEMENTATION_CLASS": "PlainSigner",
                                 "CRYPTOTOKEN_IMPLEMENTATION_CLASS": "JsonFileToken", "DEFAULTKEY": "k1"})
services.runtime.load()
services.runtime.get("Signer").token.generate_key("k1", "ECDSA", "secp256r1")
ca_key, ca = devpki.make_ca("CN=Plugin Test CA")
cert = devpki.issue(ca_key, ca, "CN=Signer", services.runtime.get("Signer").token.public_key("k1"))
services.store.update_worker(1, {"SIGNERCERTCHAIN": encode_certificate_property([cert, ca])})
services.runtime.load()
worker = services.runtime.get("Signer")
print(worker.status().state, worker.status().reasons)
response = asyncio.run(worker.process(SignRequest(data=b"third party", request_id="r1")))
(home / "sig.bin").write_bytes(response.data)
(home / "cert.pem").write_bytes(devpki.cert_pem(cert))
'''


@pytest.mark.slow
def test_third_party_plugin_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    """Publish-and-install is the only step: a token type from a separate package, no core change."""
    pkg = tmp_path / "signpeer-jsontoken"
    (pkg / "signpeer_jsontoken").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=70.1", "wheel"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "signpeer-jsontoken"
        version = "0.3.0"
        dependencies = ["signpeer-core"]

        [project.entry-points.signpeer]
        jsontoken = "signpeer_jsontoken"
    """))
    (pkg / "signpeer_jsontoken" / "__init__.py").write_text(THIRD_PARTY_TOKEN)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "setuptools>=70.1", "wheel"], check=True, capture_output=True)
    # Built from a copy: a build in the checkout would leave build/ and *.egg-info there.
    core = tmp_path / "signpeer-core"
    core.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, core / name)
    shutil.copytree(REPO / "signpeer_core", core / "signpeer_core",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    done = subprocess.run([*pip, str(core), str(pkg)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    listing = subprocess.run([str(venv / "bin" / "signpeer"), "plugins", "--json"], capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    plugins = {p["name"]: p for p in json.loads(listing.stdout)}
    assert plugins["jsontoken"]["distribution"] == "signpeer-jsontoken"
    assert plugins["jsontoken"]["version"] == "0.3.0"
    assert "JsonFileToken" in json.dumps(plugins["jsontoken"])

    home = tmp_path / "home"
    home.mkdir()
    run = subprocess.run([str(venv / "bin" / "python"), "-c", THIRD_PARTY_SCRIPT, str(home)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ACTIVE"), run.stdout
    pub = subprocess.run(["openssl", "x509", "-in", str(home / "cert.pem"), "-pubkey", "-noout"],
                         capture_output=True, check=True).stdout
    (home / "pub.pem").write_bytes(pub)
    (home / "data").write_bytes(b"third party")
    verify = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(home / "pub.pem"), "-signature",
                             str(home / "sig.bin"), str(home / "data")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr

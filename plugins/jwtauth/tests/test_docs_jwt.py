"""docs/jwt.md's walk-through runs: its property file loaded with ``signpeer setproperties`` (with a
test provider's issuer and JWKS URL), its curl and openssl commands run by bash against a real
server."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from signpeer_core import devpki
from signpeer_core.testing import run_signpeer

DOC = Path(__file__).resolve().parents[3] / "docs" / "jwt.md"
ISSUER = "https://idp.example.com/realms/signing"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_walk_through(home: Path, pki: Any, idp: Any, start_server: Any, tmp_path: Path) -> None:
    (properties,) = blocks("properties")
    properties = (properties.replace(f"{ISSUER}/protocol/openid-connect/certs", idp.jwks_url)
                  .replace(ISSUER, idp.issuer).replace("idp-ca.pem", str(pki.ca_pem)))
    devpki.write_public(home / "onetime-ca.pem", devpki.cert_pem(pki.ca_cert))
    devpki.write_private(home / "onetime-ca-key.pem", devpki.key_pem(pki.ca_key))
    (tmp_path / "jwt-onetime.properties").write_text(properties)
    loaded = run_signpeer(home, "setproperties", str(tmp_path / "jwt-onetime.properties"))
    assert loaded.returncode == 0, loaded.stderr.decode()
    server = start_server(home)
    status = run_signpeer(home, "getstatus", "brief", "all").stdout.decode()
    assert status.count("Worker status : Active") >= 3 and "Offline" not in status, status

    script = next(b for b in blocks("sh") if "Authorization: Bearer" in b)
    script = re.sub(r"TOKEN=\$\(curl.*?access_token\)\n", "", script, flags=re.S)  # the provider-specific part
    script = (script.replace("https://localhost:8443", server.url).replace("--cacert ca.pem", f"--cacert {pki.ca_pem}")
              .replace("-CAfile onetime-ca.pem", f"-CAfile {home / 'onetime-ca.pem'}"))
    token = idp.token({"groups": ["signers"], "aud": "signpeer", "email": "alice@example.com",
                       "name": "Alice Example"})
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True,
                         env={"PATH": "/usr/bin:/bin:/usr/local/bin", "TOKEN": token}, check=False)
    text = out.stdout.decode()
    assert out.returncode == 0, out.stderr.decode() + text
    assert "emailAddress = alice@example.com, CN = Alice Example" in text, text
    assert f"URI:{idp.issuer}/users/alice" in text, text
    assert text.rstrip().endswith("release 1.0"), text  # openssl cms -verify printed the content

"""``signpeer signdocument``: a signing client with the options of SignServer's
``signclient signdocument``.

* ``-protocol REST`` (the default here) posts SignServer's REST JSON to
  ``/signserver/rest/v1/workers/<worker>/process``; ``-protocol HTTP`` (signclient's default)
  posts a form to SignServer's generic ``/signserver/process`` (:mod:`signpeer_core.processservlet`).
  ``CLIENTWS``/``WEBSERVICES`` (SOAP) are not served by signpeer.
* TLS: ``--cacert`` (PEM), or signclient's ``-truststore``/``-truststorepwd``; a client
  certificate from ``--cert``/``--key`` (PEM) or ``-keystore``/``-keystorepwd``/``-keyalias``.
  Keystores may be JKS, PKCS#12 or PEM (:mod:`signpeer_core.clientstores`).
* ``-username``/``-password`` (HTTP Basic) or ``-accesstoken`` (``Authorization: Bearer``).
* Batch mode: ``-indir <dir> -outdir <dir>`` signs every file of ``-indir`` and writes each
  result under the same name into ``-outdir`` (``-threads N`` in parallel; ``-removefromindir``
  deletes a file once its result is written).
"""

from __future__ import annotations

import argparse
import base64
import getpass
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from signpeer_core.cli.base import FAILURE_EXIT, Command, CommandContext
from signpeer_core.errors import BadRequestError, ServiceUnavailableError, SignpeerError
from signpeer_core.identifiers import is_number, shorten

if TYPE_CHECKING:
    from signpeer_core.httpclient import HttpClient
    from signpeer_core.settings import Settings

PROTOCOLS = ("REST", "HTTP")
_SOAP = ("CLIENTWS", "WEBSERVICES")


def _protocol(value: str) -> str:
    protocol = value.strip().upper()
    if protocol in _SOAP:
        raise argparse.ArgumentTypeError(f"-protocol {value} (SignServer's SOAP web services) is not served by "
                                         "signpeer; use -protocol HTTP or REST")
    if protocol not in PROTOCOLS:
        raise argparse.ArgumentTypeError(f"-protocol must be HTTP or REST, not '{shorten(value)}'")
    return protocol


def _threads(value: str) -> int:
    if not is_number(value) or len(value) > 3 or not 1 <= int(value) <= 64:
        raise argparse.ArgumentTypeError(f"-threads must be a number from 1 to 64, not '{shorten(value)}'")
    return int(value)


class SignDocumentCommand(Command):
    name = "signdocument"
    help = "sign data with a worker of a running server (SignServer's signclient signdocument)"
    description = (
        "Send data to a worker and write the result (signature, CMS, ...). Options as SignServer's signclient "
        "signdocument. Exit status 0 only on success (in batch mode: every file signed). Examples: "
        "signpeer signdocument -workername CMSSigner -data 'Hello' -outfile signed.p7s ; "
        "signpeer signdocument -workername CMSSigner -indir in/ -outdir out/ -truststore truststore.jks "
        "-truststorepwd changeit -keystore client.p12 -keystorepwd foo123 -protocol HTTP"
    )

    def configure(self, parser: argparse.ArgumentParser) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("-workername", help="name of the worker")
        who.add_argument("-workerid", help="id of the worker")
        what = parser.add_mutually_exclusive_group(required=True)
        what.add_argument("-data", help="the data to sign, as text")
        what.add_argument("-infile", help="file with the data to sign ('-' for stdin)")
        what.add_argument("-indir", help="batch mode: sign every file of this directory (with -outdir)")
        parser.add_argument("-outfile", help="where to write the result (default stdout)")
        parser.add_argument("-clientside", action="store_true",
                            help="hash the data here and send only the hash (a CMSSigner with CLIENTSIDEHASHING or "
                                 "ALLOW_CLIENTSIDEHASHING_OVERRIDE answers a detached signature); a file is hashed "
                                 "as it is read, never held in memory")
        parser.add_argument("-digestalgorithm", default="SHA-256",
                            help="digest of -clientside: SHA-256 (default), SHA-384, SHA-512, SHA-224, SHA-1")
        parser.add_argument("-outdir", help="batch mode: where the results go, one per input file, same name")
        parser.add_argument("-threads", type=_threads, default=1, help="batch mode: files signed in parallel")
        parser.add_argument("-removefromindir", action="store_true",
                            help="batch mode: delete each input file once its result is written")
        parser.add_argument("-protocol", type=_protocol, default="REST",
                            help="REST (default: the REST API) or HTTP (SignServer's /signserver/process)")
        parser.add_argument("-host", help="server host (default: the running server, else settings host)")
        parser.add_argument("-port", type=int, help="server port (default: the running server, else settings port)")
        parser.add_argument("-username", help="user name for HTTP Basic authentication")
        parser.add_argument("-password", help="password (prompted for when -username is given without it)")
        parser.add_argument("-accesstoken", help="OAuth 2.0 access token, sent as Authorization: Bearer (AUTHTYPE=JWT)")
        parser.add_argument("-metadata", action="append", default=[], metavar="KEY=VALUE",
                            help="request metadata (repeatable)")
        parser.add_argument("--cacert", dest="cacert",
                            help="CA certificate(s) trusted for the server, PEM (default <home>/tls/ca.pem if it exists)")
        parser.add_argument("-truststore", help="trusted CAs: a JKS, PKCS#12 or PEM file")
        parser.add_argument("-truststorepwd", help="password of -truststore (JKS, PKCS#12)")
        parser.add_argument("-truststoretype", help="JKS, PKCS12 or PEM (default: recognised from the file)")
        parser.add_argument("-keystore", help="TLS client certificate and key: a JKS, PKCS#12 or PEM file")
        parser.add_argument("-keystorepwd", help="password of -keystore and its key")
        parser.add_argument("-keyalias", help="the key entry of -keystore to use (default: the first)")
        parser.add_argument("-keystoretype", help="JKS, PKCS12 or PEM (default: recognised from the file)")
        parser.add_argument("--cert", "-clientcert", dest="cert", help="TLS client certificate, PEM")
        parser.add_argument("--key", "-clientkey", dest="key",
                            help="private key of the client certificate, PEM (default: in --cert)")
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the answer (default 60)")

    def run(self, args: argparse.Namespace, ctx: CommandContext) -> int:
        from signpeer_core.settings import load_settings

        settings = load_settings(ctx.home)
        self._check(args)
        metadata: dict[str, str] = {}
        for item in args.metadata:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise BadRequestError(f"-metadata '{item}' must be KEY=VALUE")
            metadata[key] = value
        password = args.password
        if args.username and password is None:
            if not sys.stdin.isatty():
                raise BadRequestError("-password is required when stdin is not a terminal")
            password = getpass.getpass(f"Password for {args.username}: ")
        request = _Request(args.protocol, args.workername or args.workerid, args.workername is not None, metadata,
                           (args.username, password or "") if args.username else None, args.accesstoken)
        with _client(args, settings) as client:
            if args.indir:
                return _batch(client, request, args, ctx)
            if args.clientside:
                payload = _client_side_hash(args, metadata)
            elif args.data is not None:
                payload = args.data.encode()
            elif args.infile == "-":
                payload = sys.stdin.buffer.read()
            else:
                try:
                    payload = Path(args.infile).read_bytes()
                except OSError as exc:
                    raise BadRequestError(f"cannot read -infile {args.infile}: {exc.strerror}") from None
            result = request.sign(client, payload)
        if args.outfile:
            Path(args.outfile).write_bytes(result)
        else:
            out = getattr(ctx.stdout, "buffer", None)
            if out is None:
                ctx.stdout.write(result.decode("latin-1"))
            else:
                ctx.stdout.flush()
                out.write(result)
                out.flush()
        return 0

    @staticmethod
    def _check(args: argparse.Namespace) -> None:
        if args.indir and not args.outdir:
            raise BadRequestError("-indir needs -outdir (where the signed files go)")
        if args.outdir and not args.indir:
            raise BadRequestError("-outdir goes with -indir (batch mode); for one file use -outfile")
        if args.indir and args.outfile:
            raise BadRequestError("-outfile does not go with -indir; the results go to -outdir")
        if args.cacert and args.truststore:
            raise BadRequestError("give either --cacert or -truststore, not both")
        if (args.cert or args.key) and args.keystore:
            raise BadRequestError("give either --cert/--key or -keystore, not both")
        if args.clientside and args.indir:
            raise BadRequestError("-clientside goes with -data or -infile, not with -indir")
        if args.accesstoken and args.username:
            raise BadRequestError("give either -accesstoken or -username/-password, not both")


class _Request:
    """One worker, protocol and set of credentials; :meth:`sign` sends one document."""

    def __init__(self, protocol: str, worker: str, by_name: bool, metadata: dict[str, str],
                 auth: tuple[str, str] | None, token: str | None) -> None:
        self.protocol, self.worker, self.by_name = protocol, worker, by_name
        self.metadata, self.auth = metadata, auth
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def sign(self, client: HttpClient, payload: bytes) -> bytes:
        encoded = base64.b64encode(payload).decode()
        if self.protocol == "HTTP":
            form = {"workerName" if self.by_name else "workerId": self.worker, "data": encoded, "encoding": "base64",
                    **{f"REQUEST_METADATA.{k}": v for k, v in self.metadata.items()}}
            return client.request("POST", "/signserver/process", data=form, auth=self.auth,
                                  headers=self.headers).content
        body = {"data": encoded, "encoding": "BASE64", "metaData": self.metadata}
        answer = client.json("POST", f"/signserver/rest/v1/workers/{self.worker}/process", json=body,
                             auth=self.auth, headers=self.headers)
        try:
            return base64.b64decode(answer["data"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise ServiceUnavailableError("the server's answer has no valid base64 \"data\"") from None


def _client_side_hash(args: argparse.Namespace, metadata: dict[str, str]) -> bytes:
    """SignServer's ``signclient -clientside``: the digest of the data, streamed from a file or stdin
    (the document is never in memory whole), with the request options that announce it."""
    import hashlib

    from signpeer_core.requestoptions import (
        CLIENTSIDE_HASHDIGESTALGORITHM,
        DIGESTS,
        USING_CLIENTSUPPLIED_HASH,
        digest_name,
    )

    try:
        name = digest_name(args.digestalgorithm)
    except KeyError:
        raise BadRequestError(f"-digestalgorithm '{args.digestalgorithm}' is not one of SHA-1, SHA-224, SHA-256, "
                              "SHA-384, SHA-512") from None
    digest = hashlib.new(DIGESTS[name][0])
    if args.data is not None:
        digest.update(args.data.encode())
    else:
        try:
            source = sys.stdin.buffer if args.infile == "-" else open(args.infile, "rb")
        except OSError as exc:
            raise BadRequestError(f"cannot read -infile {args.infile}: {exc.strerror}") from None
        try:
            while chunk := source.read(1024 * 1024):
                digest.update(chunk)
        finally:
            if source is not sys.stdin.buffer:
                source.close()
    metadata[USING_CLIENTSUPPLIED_HASH] = "true"
    metadata[CLIENTSIDE_HASHDIGESTALGORITHM] = f"SHA-{name[3:]}" if name != "SHA1" else "SHA-1"
    return digest.digest()


def _client(args: argparse.Namespace, settings: Settings) -> HttpClient:
    """The HTTP client with the TLS files the options name (keystores converted, then removed)."""
    from signpeer_core.clientstores import client_tls_files
    from signpeer_core.httpclient import HttpClient
    from signpeer_core.server import running_server, url_for

    if args.host or args.port:
        url = url_for(args.host or settings.host, args.port or settings.port)
    else:
        info = running_server(settings)
        url = info["url"] if info else url_for(settings.host, settings.port)
    headers = {"X-Keyfactor-Requested-With": "signpeer-signdocument"}
    options: dict[str, Any] = {"timeout": args.timeout, "max_connections": args.threads, "headers": headers}
    with tempfile.TemporaryDirectory(prefix="signpeer-tls-") as tmp:
        stores = client_tls_files(Path(tmp), args.truststore, args.truststorepwd, args.keystore, args.keystorepwd,
                                  args.keyalias, args.truststoretype, args.keystoretype)
        if stores.cafile is not None:
            cafile: Path | None = stores.cafile
            ca_hint = f"-truststore {args.truststore}"
        else:
            cafile = Path(args.cacert) if args.cacert else settings.home / "tls" / "ca.pem"
            if args.cacert and not cafile.exists():
                raise BadRequestError(f"--cacert {cafile} does not exist")
            cafile = cafile if cafile.exists() else None
            ca_hint = "--cacert"
        if stores.cert is not None:
            return HttpClient(url, cafile=cafile, cert=stores.cert, key=stores.key, key_password=stores.key_password,
                              ca_hint=ca_hint, cert_hint=f"the certificate of -keystore {args.keystore}", **options)
        return HttpClient(url, cafile=cafile, cert=args.cert, key=args.key, ca_hint=ca_hint, **options)


def _batch(client: HttpClient, request: _Request, args: argparse.Namespace, ctx: CommandContext) -> int:
    indir, outdir = Path(args.indir), Path(args.outdir)
    if not indir.is_dir():
        raise BadRequestError(f"-indir {indir} is not a directory")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadRequestError(f"cannot create -outdir {outdir}: {exc.strerror}") from None
    if outdir.resolve() == indir.resolve():
        raise BadRequestError("-outdir must not be -indir (the results would replace the documents)")
    files = sorted(p for p in indir.iterdir() if p.is_file() and not p.name.startswith("."))

    def one(path: Path) -> str | None:
        try:
            result = request.sign(client, path.read_bytes())
            target = outdir / path.name
            partial = target.with_name(f".{path.name}.{os.getpid()}.partial")
            partial.write_bytes(result)
            os.replace(partial, target)  # nothing half-written under the result's name
            if args.removefromindir:
                path.unlink()
        except SignpeerError as exc:
            return f"Failure for {path.name}: {exc.message}"
        except OSError as exc:
            return f"Failure for {path.name}: {exc.strerror or exc}"
        return None

    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        failures = [f for f in pool.map(one, files) if f]
    for failure in failures:
        ctx.error(failure)
    ctx.print(f"Signed {len(files) - len(failures)} of {len(files)} file(s) from {indir} into {outdir}")
    return FAILURE_EXIT if failures else 0

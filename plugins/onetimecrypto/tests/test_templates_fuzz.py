"""The one-time certificate templates are total (issue 11, item 8): whatever the configured template
and whatever the request's user name and metadata, parsing raises only ConfigurationError and
filling only BadRequestError, never anything else (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from signpeer_core.api import BadRequestError, ConfigurationError, escape_dn_value, parse_dn
from signpeer_onetimecrypto.templates import (
    escape_san_value,
    general_names,
    parse_template,
    parse_time,
    template_values,
)

_PIECES = st.sampled_from(["${username}", "${transactionId}", "${metadata.A}", "${REQUEST_METADATA.b}",
                           "${JWT.sub}", "${", "}", "${bogus}", "CN=", ",O=", "dNSName=", "rfc822Name=",
                           "ipaddress=", "guid=", "upn=", "directoryName=CN=x", ",", "=", "\\", "+"])
TEMPLATES = st.lists(_PIECES | st.text(max_size=6), max_size=8).map("".join)
VALUES = st.text(max_size=20)  # any code point: control characters and lone surrogates included


@settings(max_examples=300, deadline=None)
@given(template=TEMPLATES, username=st.none() | VALUES, meta=st.dictionaries(st.sampled_from(["A", "b", "JWT.sub"]),
                                                                              VALUES, max_size=3))
def test_dn_and_san_templates_are_total(template: str, username: str | None, meta: dict[str, str]) -> None:
    values = template_values(username, "tx-1", meta)
    try:
        dn = parse_template("SUBJECTDN_PATTERN", template)
    except ConfigurationError:
        pass
    else:
        try:
            parse_dn(dn.fill(values, escape_dn_value))
        except BadRequestError:
            pass
    try:
        san = parse_template("SUBJECTALTNAME_PATTERN", template)
    except ConfigurationError:
        pass
    else:
        try:
            general_names(san.fill(values, escape_san_value))
        except (BadRequestError, ConfigurationError):
            pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30) | st.from_regex(r"-?[0-9]{1,12}:[0-9]{1,12}:[0-9]{1,12}", fullmatch=True)
       | st.from_regex(r"\d{1,3}:\d{1,3}:\d{1,3}", fullmatch=True))
def test_validity_times_are_total(text: str) -> None:
    import datetime as dt

    try:
        spec = parse_time("CERTIFICATEENDTIME", text)
    except ConfigurationError:
        return
    if spec is not None:
        spec.resolve(dt.datetime.now(dt.UTC))  # at signing time too: no overflow

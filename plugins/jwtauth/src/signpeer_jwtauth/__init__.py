"""signpeer JWT authorizer: signing requests authorized by bearer tokens from an identity provider.

``AUTHTYPE=JWT`` (SignServer's ``org.signserver.server.jwtauth.JwtAuthorizer``) on a signer
accepts ``Authorization: Bearer <JWT>`` from trusted authorization servers and makes the token's
verified claims the request's identity; with a one-time key worker they go into the certificate.

* :mod:`.servers` — the configuration: ``AUTHSERVER<n>.*`` (trusted servers), ``AUTHJWT<n>.*``
  (claim rules);
* :mod:`.jwks` — verification keys: a fixed key, or a JWKS fetched over HTTPS and cached;
* :mod:`.authorizer` — :class:`~signpeer_jwtauth.authorizer.JwtAuthorizer`: verification per request;
* :mod:`.plugin` — the hook that registers it.

It is a plugin, not part of the core, because it brings a JOSE library and outgoing HTTPS
calls that a server without token authentication should not carry; it reaches the pipeline
through the public authorizer seam (``signpeer_authorizer_types``, ``BearerAuthorizer``).
"""

__version__ = "0.1.0"

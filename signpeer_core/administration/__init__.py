"""The administration service layer, one module per concept.

* :mod:`.base` — the acting administrator and the worker an operation resolves once;
* :mod:`.publishing` — :class:`Change`, :func:`stage` and :func:`publish` (write + audit + generation
  bump in one transaction, then reload here): the one way a change is written and made active;
* :mod:`.worker_properties` — set/remove properties, create and delete workers;
* :mod:`.global_properties` — global properties and the client rules stored in them;
* :mod:`.keys` — generate, renew (next key), test and remove keys;
* :mod:`.signer_certificates` — CSR, certificate install/upload, chain import into the token;
* :mod:`.activation` — ``reload`` and token activation.

:class:`signpeer_core.admin.WorkerAdmin` combines them for the command line, the Admin Web and
the peer endpoint.
"""

from signpeer_core.administration.publishing import Change, publish, stage

__all__ = ["Change", "publish", "stage"]

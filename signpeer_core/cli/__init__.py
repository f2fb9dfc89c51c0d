"""The ``signpeer`` command line: SignServer's AdminCLI syntax plus server and client commands."""

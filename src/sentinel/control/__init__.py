"""Control of a running daemon: the HTTP API, one-tap acknowledgement links, their secrets.

`links` (signing) and `secrets` are pure or stdlib-only, `http` is the aiohttp server the
daemon runs, `client` is what the `sentinel` command uses. Nothing is imported here, so the
command does not load aiohttp.
"""

"""The control socket: how local clients (the CLI, apps) read, write and watch records and run
the daemon (newline-delimited JSON over a Unix socket, docs/control-protocol.md).

The package's modules, each read whole: `server.py` (the method table and dispatch),
`methods_data.py` and `methods_admin.py` (what each method means), `watch.py` (the change
stream), `api.py` (parameters, ops, JSON shapes of records), `values.py` (JSON <-> stored values),
`errors.py` (error codes), `connection.py` (one connection: framing, order, limits),
`socket_file.py` (the socket file) and `access.py` (admins, apps and grants). Nothing here holds
merge, sync or membership rules.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import serve_control

__all__ = ["serve_control"]


def __getattr__(name: str) -> Any:
    # `serve_control` is imported on first use, not here: the share methods (shares/commands.py)
    # import this package's `api`, and the server imports them, so an eager import would be a
    # cycle for whoever imports shares.commands first.
    if name == "serve_control":
        from .server import serve_control

        return serve_control
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""``vaelab explore RUN``: a trained model's latent space in the browser, served from this
machine (docs/explore.md)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable

from vaelab.cli.args import Command, _cache_arg, non_negative_int
from vaelab.errors import VaelabError


def _port(text: str) -> int:
    """An argparse type: a TCP port 0-65535 (0: any free port)."""
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {text!r}")
    return int(text)


def _explore_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="a run folder written by `vaelab train`")
    p.add_argument("--port", type=_port, default=8765, help="TCP port (8765; 0: any free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (127.0.0.1: this machine only; another address "
                        "exposes the explorer to the network)")  # fmt: skip
    p.add_argument("--limit", type=non_negative_int, default=5000,
                   help="encode the first N test images (5000; 0: all)")  # fmt: skip
    _cache_arg(p)


def serve(server) -> None:
    """Serve until Ctrl-C or SIGTERM (both end it cleanly); SIGTERM's old handler returns."""

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()


def _reason(e: Exception) -> str:
    """The first line of why a socket could not listen."""
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text.splitlines()[0]


def cmd_explore(args: argparse.Namespace) -> None:
    from vaelab.explore.server import ExplorerServer
    from vaelab.explore.space import load_space

    if not args.host or any(c.isspace() for c in args.host):
        raise VaelabError(f"--host must be an address or a host name, got {args.host!r}")
    try:  # listen first: a port in use is refused before the encoding
        server = ExplorerServer((args.host, args.port))
    except (OSError, ValueError) as e:  # in use, not allowed, no such host, a malformed name
        raise VaelabError(f"cannot listen on {args.host} port {args.port}: {_reason(e)}") from e
    try:
        print(f"vaelab: encoding the test images of {args.run} …", file=sys.stderr, flush=True)
        server.space = load_space(args.run, args.cache, args.limit)
    except BaseException:
        server.server_close()
        raise
    if server.server_address[0] not in ("127.0.0.1", "::1"):
        print(f"vaelab: warning: listening on {args.host}: the explorer is exposed to the "
              "network (anyone who can reach this machine can use it)", file=sys.stderr)  # fmt: skip
    print(f"vaelab: exploring {len(server.space.codes):,} test codes of {args.run} at {server.url} "
          "(Ctrl-C stops)", flush=True)  # fmt: skip
    serve(server)
    print("vaelab: explorer stopped", flush=True)


# fmt: off
COMMANDS: dict[tuple[str, ...], tuple[Command, str, Callable[[argparse.ArgumentParser], None]]] = {
    ("explore",): (cmd_explore, "a run's latent space in the browser (a local web page)", _explore_args),
}
# fmt: on

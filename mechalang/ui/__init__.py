"""`mecha ui`: the local web page (quick merge, block weights, recipe editor, runs with streamed
progress) over the pipeline. Torch is imported only when a merge starts."""

from __future__ import annotations

import os
import sys

from .server import create_app

__all__ = ["create_app", "run_ui"]


def run_ui(models_dir: str | os.PathLike | None = None, output_dir: str | os.PathLike | None = None, *,
           host: str = "127.0.0.1", port: int = 0, open_browser: bool = True) -> int:
    """Serve the page until Ctrl-C; print (and open) the URL with this launch's token."""
    import socket
    import webbrowser

    import uvicorn

    from ..commands.catalog import models_folder

    models = models_folder(models_dir)
    output = models if output_dir is None else os.path.abspath(os.path.expanduser(os.fspath(output_dir)))
    if not models.is_dir():
        sys.stderr.write(f"error: the models folder `{models}` is not a folder\n")
        return 2
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as exc:
        sys.stderr.write(f"error: cannot create the output folder `{output}`: {exc.strerror or exc}\n")
        return 2
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))  # bound here, so port 0 gives a free port we can put in the URL
    except OSError as exc:
        sys.stderr.write(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}\n")
        return 2
    sock.listen(128)  # connections wait in the backlog until uvicorn serves: the browser may be faster
    port = sock.getsockname()[1]
    app = create_app(models, output, hosts=(host,), port=port)
    token = app.state.ui.guard.token
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/?token={token}"
    print(f"mecha ui: {url}\n  models: {models}\n  output: {output}\n  Ctrl-C stops the server", flush=True)
    if open_browser:
        webbrowser.open(url)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    return 0

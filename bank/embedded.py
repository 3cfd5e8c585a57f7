"""Running the operator: in a background thread on a free loopback port (demo, UI, tests) or in the foreground.

    with run_embedded(settings) as op:      # op.url == "http://127.0.0.1:PORT"
        ...
"""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn

from bank.app import create_app
from bank.service import Operator
from bank.settings import OperatorSettings
from wire.errors import OperatorError

GC_THRESHOLD = 50_000  # allocations between young-generation collections in a served operator (default 700)


@dataclass
class EmbeddedOperator:
    """An operator served by uvicorn in a daemon thread. ``stop()`` shuts it down and closes the database."""

    operator: Operator
    host: str = "127.0.0.1"
    port: int = 0
    _server: uvicorn.Server | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedOperator:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(create_app(self.operator), log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"operator:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise OperatorError(f"the embedded operator did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.operator.close()


def start_embedded(settings: OperatorSettings, port: int = 0, host: str = "127.0.0.1") -> EmbeddedOperator:
    """Start the operator of ``settings`` on a free loopback port (or ``port``); call ``stop()``."""
    return EmbeddedOperator(Operator.from_settings(settings), host, port).start()


@contextmanager
def run_embedded(settings: OperatorSettings, port: int = 0) -> Iterator[EmbeddedOperator]:
    """Context manager around :func:`start_embedded`."""
    op = start_embedded(settings, port)
    try:
        yield op
    finally:
        op.stop()


def serve(settings: OperatorSettings, host: str = "127.0.0.1", port: int = 8700) -> None:
    """Serve in the foreground until interrupted (``pos operator serve``).

    The operator warms up before it listens (:meth:`Operator.warm_up`), so the first batch costs what the others
    do. Then everything allocated so far (modules, the app, caches) is moved out of the garbage collector's sight
    and its first generation is made larger: a settlement batch allocates tens of thousands of short-lived objects,
    almost none in reference cycles, and the default thresholds would run a collection every few hundred of them,
    with a full one over every object of the process now and then, all while holding the GIL.
    """
    op = Operator.from_settings(settings)
    try:
        op.warm_up()
        app = create_app(op)
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
        uvicorn.run(app, host=host, port=port, log_level="info", lifespan="off")
    finally:
        op.close()

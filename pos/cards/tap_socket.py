"""Tap a mock card on a running terminal from another shell: a Unix socket at ``HOME/run/TID.sock``.

A running terminal (``pos run`` or ``pos gate`` with the mock reader) owns a :class:`TapBroker` and serves it with
:class:`TapServer`. ``pos card tap CARD --terminal TID`` connects, asks the broker to present the card, and prints
the decision the terminal made on that tap: the same JSON object as ``pos pay --json`` (a gate adds ``gate``).

The broker locks the card in the card store while it is in the field, presents it to the terminal's mock reader,
releases the lock when the card leaves (a torn tap lets the customer tap the same card again: the terminal waits
for it, and the broker takes that tap like any other), and waits for the terminal's decision: every card tapped in
one charge (the torn one and its re-tap) gets the charge's decision. A terminal that is not waiting for a tap (a
counter with no charge open) refuses at once.

Protocol: one JSON line each way. ``{"op": "tap", "card": "c0001", "lang": "en"}`` ->
``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": "..."}``; ``{"op": "ping"}`` -> ``{"ok": true, ...}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecny_nfc.mock import Faults, MockReader
from ecny_nfc.reader import NoCard
from pos.home import Home
from wallet.card import WalletApplet
from wallet.errors import EcnyError, InvalidInput

MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS
TOO_LONG = "the path is too long for a Unix socket"


class TerminalNotRunning(EcnyError):
    """No terminal with that id is listening in this home directory: nothing answers at its socket ``path``;
    ``detail`` is what the operating system said (no such file, connection refused, a path too long)."""

    def __init__(self, message: str, terminal_id: str = "", path: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.terminal_id, self.path, self.detail = terminal_id, path, detail


class TapRefused(EcnyError):
    """The terminal is running but did not take the tap. ``why`` says which, for a translated message:
    ``not_waiting`` (a counter with no charge open), ``no_decision`` (none within ``seconds``), ``stopped`` (the
    terminal stopped waiting before it read the card), ``no_answer`` (the socket), ``refused`` (the terminal's own
    words, in the message)."""

    def __init__(self, message: str, why: str = "refused", terminal_id: str = "", seconds: float = 0.0) -> None:
        super().__init__(message)
        self.why, self.terminal_id, self.seconds = why, terminal_id, seconds


def socket_path(home: Home, terminal_id: str) -> Path:
    """Where terminal ``terminal_id`` of ``home`` listens."""
    return home.root / "run" / f"{terminal_id}.sock"


@dataclass
class _Waiter:
    card_id: str
    done: threading.Event = field(default_factory=threading.Event)
    left: threading.Event = field(default_factory=threading.Event)
    connected: bool = False
    result: dict[str, Any] | None = None
    on_left: Callable[[], object] | None = None  # told when the card leaves the field mid-tap (torn)


class _FieldCard:
    """A stored card in the field: tells the broker when the reader picks it up."""

    def __init__(self, applet: WalletApplet, on_connect: Callable[[], None]) -> None:
        self._applet = applet
        self._on_connect = on_connect

    def process(self, apdu: bytes) -> bytes:
        return self._applet.process(apdu)

    def reset(self) -> None:
        self._on_connect()
        self._applet.reset()


class TapBroker:
    """Presents stored mock cards to a terminal's mock reader and hands back the terminal's decision.

    The terminal calls :meth:`arm` when it waits for taps, :meth:`decided` with each decision (JSON) and
    :meth:`disarm` when it stops waiting. Callers of :meth:`tap` block until the decision on their card.
    """

    def __init__(self, home: Home, terminal_id: str, reader: MockReader) -> None:
        self.home = home
        self.terminal_id = terminal_id
        self.reader = reader
        self._lock = threading.Lock()
        self._armed = False
        self._waiters: list[_Waiter] = []
        self._current: _Waiter | None = None
        reader.observe(self._on_exchange)

    # -- the terminal's side ----------------------------------------------------------------------------------------
    @property
    def armed(self) -> bool:
        return self._armed

    def arm(self) -> None:
        """The terminal waits for taps from now on."""
        with self._lock:
            self._armed = True

    def decided(self, result: dict[str, Any]) -> None:
        """The terminal decided on the card(s) it connected since the last decision."""
        with self._lock:
            ready = [w for w in self._waiters if w.connected]
            self._waiters = [w for w in self._waiters if not w.connected]
            self._current = None
        for w in ready:
            w.result = result
            w.left.set()
            w.done.set()

    def disarm(self, result: dict[str, Any] | None = None) -> None:
        """The terminal stops waiting: answer connected cards with ``result``, take unused cards off the field."""
        if result is not None:
            self.decided(result)
        with self._lock:
            self._armed = False
            stale, self._waiters = self._waiters, []
        while True:  # drain cards presented but never picked up
            try:
                self.reader.connect(timeout=0).release()
            except NoCard:
                break
        for w in stale:
            w.left.set()
            w.done.set()

    def _on_exchange(self, command: bytes, response: bytes | None) -> None:
        current = self._current
        if response is None and current is not None:
            current.left.set()  # torn: the card is out of the field, its lock can go
            if current.on_left is not None:
                current.on_left()

    def _connected(self, waiter: _Waiter) -> None:
        with self._lock:
            waiter.connected = True
            self._current = waiter

    # -- the tapper's side ------------------------------------------------------------------------------------------
    def tap(self, card_id: str, faults: Faults | None = None, timeout: float = 60.0,
            on_left: Callable[[], object] | None = None) -> dict[str, Any]:
        """Present stored card ``card_id`` and return the terminal's decision (JSON). ``on_left`` is called (from
        the terminal's thread) when the card leaves the field mid-tap: the terminal then waits for a re-tap."""
        if not self._armed:
            raise TapRefused(f"terminal {self.terminal_id} is not waiting for a tap: start a charge first",
                             "not_waiting", self.terminal_id)
        waiter = _Waiter(card_id, on_left=on_left)
        with self.home.cards.open(card_id, timeout=5) as applet:
            with self._lock:
                self._waiters.append(waiter)
            self.reader.present(_FieldCard(applet, lambda: self._connected(waiter)), faults)
            waiter.left.wait(timeout)
        if not waiter.done.wait(timeout):
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            raise TapRefused(f"terminal {self.terminal_id} gave no decision within {timeout:g} s", "no_decision",
                             self.terminal_id, timeout)
        if waiter.result is None:
            raise TapRefused(f"terminal {self.terminal_id} stopped waiting before it read card {card_id}", "stopped",
                             self.terminal_id)
        return waiter.result


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        try:
            request = json.loads(self.rfile.readline(65536) or b"{}")
            answer = self.server.serve(request)
        except (ValueError, TypeError) as exc:
            answer = {"ok": False, "error": f"bad request: {exc}"}
        self.wfile.write(json.dumps(answer, ensure_ascii=False).encode() + b"\n")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    serve: Callable[[dict[str, Any]], dict[str, Any]]


class TapServer:
    """Serves a broker on ``HOME/run/TID.sock`` in a background thread."""

    def __init__(self, home: Home, terminal_id: str, broker: TapBroker, kind: str = "counter",
                 lang: Callable[[], str] = lambda: "en") -> None:
        self.path = socket_path(home, terminal_id)
        self.broker = broker
        self.terminal_id = terminal_id
        self.kind = kind
        self.lang = lang
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if len(str(self.path)) > MAX_SOCKET_PATH:
            raise EcnyError(f"socket path {self.path} is too long for a Unix socket: use a shorter --home")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            try:
                _request(self.path, {"op": "ping"}, timeout=1.0)
            except TerminalNotRunning:
                self.path.unlink(missing_ok=True)  # left by a terminal that died
            else:
                raise InvalidInput(f"terminal {self.terminal_id} is already running ({self.path})")
        server = _Server(str(self.path), _Handler)
        server.serve = self._serve
        os.chmod(self.path, 0o600)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"tap-socket-{self.terminal_id}", daemon=True)
        self._thread.start()

    def _serve(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "terminal_id": self.terminal_id, "kind": self.kind, "waiting": self.broker.armed}
        if op == "tap":
            card = request.get("card")
            if not isinstance(card, str):
                return {"ok": False, "error": "tap needs a card id"}
            timeout = float(request.get("timeout", 60))
            try:
                return {"ok": True, "result": self.broker.tap(card, timeout=timeout)}
            except TapRefused as exc:
                return {"ok": False, "error": str(exc), "why": exc.why, "seconds": exc.seconds}
            except EcnyError as exc:
                return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _request(path: Path, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One request and its answer over the socket at ``path``. Nothing listening there (no file, a file left by a
    terminal that died, a path a Unix socket cannot have) is :class:`TerminalNotRunning`; a terminal that answers
    nothing in ``timeout`` seconds or drops the connection is :class:`TapRefused` (``no_answer``)."""
    if len(str(path)) > MAX_SOCKET_PATH:  # the terminal could not have opened it either (TapServer.start)
        raise TerminalNotRunning(f"{path} is too long for a Unix socket: use a shorter --home", path=str(path),
                                 detail=TOO_LONG)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:  # no file, or one left by a terminal that died
            raise TerminalNotRunning(str(exc), path=str(path), detail=exc.strerror or str(exc)) from None
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise TapRefused(f"no answer from {path} within {timeout:g} s", "no_answer", seconds=timeout) from None
    except ConnectionError as exc:  # the terminal went away mid-request (connection reset, broken pipe)
        raise TapRefused(f"{path} dropped the connection ({exc.strerror or exc})", "no_answer") from None
    finally:
        sock.close()
    if not data:
        raise TapRefused(f"{path} closed the connection without an answer", "no_answer")
    try:
        answer = json.loads(data)
    except ValueError:
        raise TapRefused(f"{path} answered something that is not JSON", "no_answer") from None
    if not isinstance(answer, dict):
        raise TapRefused(f"{path} answered something that is not a JSON object", "no_answer")
    return answer


def ping(home: Home, terminal_id: str, timeout: float = 2.0) -> dict[str, Any]:
    """Whether terminal ``terminal_id`` of ``home`` runs: ``{"kind": ..., "waiting": bool}`` (waiting for a tap);
    raises :class:`TerminalNotRunning`."""
    return _request(socket_path(home, terminal_id), {"op": "ping"}, timeout=timeout)


def send_tap(home: Home, terminal_id: str, card_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Tap ``card_id`` on running terminal ``terminal_id``; return its decision (``pos pay --json`` shape).
    Raises :class:`TerminalNotRunning` (saying how to start it) or :class:`TapRefused`."""
    home.terminal(terminal_id)
    home.cards.load(card_id)  # a clear error for an unknown card before bothering the terminal
    path = socket_path(home, terminal_id)
    try:
        answer = _request(path, {"op": "tap", "card": card_id, "timeout": timeout}, timeout=timeout + 5)
    except TerminalNotRunning as exc:
        todo = ("no terminal can listen there: use a shorter --home" if exc.detail == TOO_LONG else
                f"start it with `pos run --terminal {terminal_id}` (or `pos gate --terminal {terminal_id}`)")
        raise TerminalNotRunning(f"no terminal {terminal_id} is running in {home.root} (nothing answers at {path}: "
                                 f"{exc.detail}): {todo}", terminal_id, str(path), exc.detail) from None
    except TapRefused as exc:
        raise TapRefused(str(exc), exc.why, terminal_id, exc.seconds) from None
    if not answer.get("ok"):
        why = answer.get("why")
        seconds = answer.get("seconds")
        raise TapRefused(str(answer.get("error", "the terminal refused the tap")),
                         why if isinstance(why, str) else "refused", terminal_id,
                         float(seconds) if isinstance(seconds, (int, float)) else 0.0)
    return answer["result"]

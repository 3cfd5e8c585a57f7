"""A private pcscd with a vpcd reader, for tests and benchmarks that must not touch (or need) the system's pcscd.

pcscd is socket-activated (``LISTEN_FDS``): it serves a unix socket in a temporary directory, which the PC/SC client
library finds through ``PCSCLITE_CSOCK_NAME`` (set in this process's environment; libpcsclite reads it once, at
the first PC/SC call, so start this before any). vpcd listens on two free TCP ports (its two slots). The system's
``/run/pcscd/pcscd.comm`` is left alone; only ``/run/pcscd/pcscd.pid``, which pcscd always writes, is touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ecny_nfc.reader import ReaderNotFound

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
_EXEC_ACTIVATED = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_FDS'] = '1'; "
                   "os.environ['LISTEN_PID'] = str(os.getpid()); os.execv(sys.argv[2], sys.argv[2:])")


@dataclass
class PrivatePcscd:
    """A running private pcscd: its socket, the vpcd port of slot 0 (slot 1 is the next port) and reader names."""

    socket_path: Path
    port: int
    slots: tuple[str, str] = ("Virtual PCD 00 00", "Virtual PCD 00 01")


def missing_pcsc_stack() -> str | None:
    """Why the PC/SC stack cannot run here (with the fix), or None."""
    if shutil.which("pcscd") is None and not Path("/usr/sbin/pcscd").exists():
        return "pcscd is not installed (run scripts/setup as root: apt-get install pcscd vsmartcard-vpcd)"
    if not VPCD_DRIVER.exists():
        return "the vpcd driver is not installed (run scripts/setup as root: apt-get install vsmartcard-vpcd)"
    try:
        import smartcard.scard  # noqa: F401
    except ImportError as exc:
        return f"pyscard is not importable ({exc}): run scripts/setup"
    return None


def _free_port_pair() -> int:
    for _ in range(100):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port: int = a.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise ReaderNotFound("no two free consecutive TCP ports for vpcd")


@contextmanager
def private_pcscd(start_timeout: float = 15.0) -> Iterator[PrivatePcscd]:
    """Run a private pcscd with vpcd for the duration of the ``with`` block (then stop it and clean up)."""
    missing = missing_pcsc_stack()
    if missing:
        raise ReaderNotFound(missing)
    workdir = Path(tempfile.mkdtemp(prefix="ecny-pcscd-"))
    confdir = workdir / "reader.conf.d"
    confdir.mkdir()
    port = _free_port_pair()
    (confdir / "vpcd").write_text(f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:{port}\n'
                                  f"LIBPATH {VPCD_DRIVER}\nCHANNELID {port}\n")
    sock_path = workdir / "pcscd.comm"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(64)
    fd = listener.fileno()
    pcscd_bin = shutil.which("pcscd") or "/usr/sbin/pcscd"
    log = open(workdir / "pcscd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-c", _EXEC_ACTIVATED, str(fd), pcscd_bin, "--foreground", "-c",
                             str(confdir)], pass_fds=(fd,), stdout=log, stderr=subprocess.STDOUT)
    os.environ["PCSCLITE_CSOCK_NAME"] = str(sock_path)
    try:
        _wait_for_readers(proc, port, workdir, start_timeout)
        yield PrivatePcscd(sock_path, port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        listener.close()
        log.close()
        if not os.environ.get("ECNY_KEEP_PCSCD_LOG"):
            shutil.rmtree(workdir, ignore_errors=True)


def _wait_for_readers(proc: subprocess.Popen[bytes], port: int, workdir: Path, timeout: float) -> None:
    from smartcard import scard

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ReaderNotFound(f"pcscd exited: {(workdir / 'pcscd.log').read_text(errors='replace')[-2000:]}")
        hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hr == scard.SCARD_S_SUCCESS:
            hr, names = scard.SCardListReaders(ctx, [])
            scard.SCardReleaseContext(ctx)
            if hr == scard.SCARD_S_SUCCESS and len(names) >= 2:
                return
        time.sleep(0.05)
    raise ReaderNotFound(f"pcscd's vpcd reader (port {port}) did not come up within {timeout:.0f} s")

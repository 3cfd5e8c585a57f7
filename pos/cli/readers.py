"""``pos card present``: hold a stored card to a real reader stack (nfcpy's udp radio, or pcscd's vpcd driver).

The card is taken out of the card store (locked) for one tap at a time, so ``pos card show``/``load`` and other
terminals' taps on the same card run between taps; every state change is saved before it is answered.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from ecny_nfc.emulation import EmulatedCard, EmulatorFaults, TapRecord
from pos.cli.main import EXIT_OK, Commands, _nonneg_int
from pos.home import Home
from pos.money import format_fen
from wallet.errors import InvalidInput


def _event(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, ensure_ascii=False) if args.json else text, flush=True)


def cmd_card_present(args: argparse.Namespace, home: Home) -> int:
    """Emulate a stored card until Ctrl-C (or, with ``--once``, until one tap completes)."""
    from ecny_nfc.iso_dep_card import UdpCardEmulator, parse_udp_path
    from ecny_nfc.vpcd_card import VpcdCard, parse_vpcd_address

    if bool(args.nfc) == bool(args.vpcd):
        raise InvalidInput("give exactly one of --nfc udp:HOST:PORT or --vpcd HOST:PORT")
    try:
        faults = EmulatorFaults(tear_after=args.tear_after, slow=args.slow, away=args.away)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    store = home.cards
    store.load(args.card)  # fails early (CardNotFound) for a card that does not exist

    def on_tap(record: TapRecord) -> None:
        state = store.load(args.card)
        _event(args, {"event": "tap", "card_id": args.card, "apdus": record.apdus, "torn": record.torn,
                      "balance_fen": state.balance_fen, "counter": state.counter},
               f"tap: {record.apdus} APDUs{' (torn: the card left the field mid-tap)' if record.torn else ''}, "
               f"balance {format_fen(state.balance_fen)}, counter {state.counter}")

    card = EmulatedCard(lambda: store.open(args.card, timeout=0.5), faults, on_tap)
    emulator: UdpCardEmulator | VpcdCard
    if args.nfc:
        host, port = parse_udp_path(args.nfc)
        emulator = UdpCardEmulator(None, host, port, card=card)
        where = emulator.path
        hint = f"pos pay --terminal TID --amount YUAN --reader {where}"
    else:
        host, port = parse_vpcd_address(args.vpcd)
        emulator = VpcdCard(None, host, port, card=card)
        where = f"vpcd:{host}:{port}"
        hint = "pos pay --terminal TID --amount YUAN --reader pcsc"
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    emulator.start()
    try:
        _event(args, {"event": "ready", "card_id": args.card, "at": where},
               f"card {args.card} is in the field at {where}; tap it with `{hint}` (Ctrl-C takes it away)")
        while not stop.is_set():
            if args.once:
                with card.changed:
                    if any(not t.torn for t in card.taps):
                        break
                    card.changed.wait(0.2)
            else:
                stop.wait(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.close()
        signal.signal(signal.SIGTERM, previous)
    sys.stdout.flush()
    return EXIT_OK




def register(commands: Commands) -> None:
    """Add ``pos card present``."""
    p = commands.add("present", cmd_card_present,
                     "hold a stored card to a real reader stack: nfcpy udp (ISO-DEP) or pcscd's vpcd", group="card")
    p.add_argument("card", help="card id, e.g. c0001")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--nfc", metavar="udp:HOST:PORT",
                       help="emulate an ISO 14443-4 Type 4A card for terminals with --reader udp:HOST:PORT")
    where.add_argument("--vpcd", metavar="HOST:PORT",
                       help="insert the card into vsmartcard's vpcd (pcscd) for terminals with --reader pcsc "
                            "(Debian: localhost:35963)")
    p.add_argument("--once", action="store_true", help="leave after one completed tap (a torn tap does not count)")
    p.add_argument("--tear-after", type=_nonneg_int, metavar="N",
                   help="first tap: the card processes the N-th APDU and vanishes without answering")
    p.add_argument("--slow", type=float, default=0.0, metavar="S", help="every APDU takes S seconds longer")
    p.add_argument("--away", type=float, default=0.0, metavar="S",
                   help="after a tear, stay out of the field S seconds before the card can be tapped again")

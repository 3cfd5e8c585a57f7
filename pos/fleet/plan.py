"""What a fleet run plays: its options, its terminals and merchants (a merchants.yaml of its own), its taps.

The taps are generated from the seed, never listed: any process can replay the same sequence and keep the taps of
its own terminals, so memory does not grow with the number of taps.

A run is split into ``shards`` (one process each): shard ``s`` owns the terminals at positions ``i % shards == s``
and the wallets ``w % shards == s``, and a wallet taps only at terminals of its own shard (a city's districts), so a
shard holds its cards in memory and no card is ever in two processes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from pos.i18n import tr
from wallet.errors import InvalidInput
from wallet.ids import WALLET_PREFIX, luhn_digit

GATE_PRICE_FEN = 500  # one ticket at a fleet gate
AMOUNTS_FEN = (150, 300, 800, 1250, 2000, 3990, 6800, 12000)  # counter amounts, drawn at random
TERMINALS_PER_MERCHANT = 10
OPENING_FEN = 100_000_000  # each wallet's opening balance (tier 1: no wallet cap)


@dataclass(frozen=True)
class FleetOptions:
    """A run's options (``pos fleet run``). Fractions are of wallets (``clones``), taps (``tears``) and terminals
    whose first sync meets an operator outage (``outages``)."""

    terminals: int = 4
    wallets: int = 20
    taps: int = 200
    gates: int = 0
    days: int = 1
    clones: float = 0.0
    tears: float = 0.0
    outages: float = 0.0
    seed: int = 1
    shards: int = 2

    def check(self) -> None:
        if self.terminals < 1 or self.wallets < 1 or self.taps < 0 or self.days < 1 or self.shards < 1:
            raise InvalidInput("--terminals, --wallets and --days must be 1 or more, --taps 0 or more")
        if self.shards > min(self.terminals, self.wallets):
            raise InvalidInput("--shards must not be more than --terminals or --wallets")
        if not 0 <= self.gates <= self.terminals:
            raise InvalidInput("--gates must be between 0 and --terminals")
        if self.terminals > 999_999 or self.wallets > 99_999_999:
            raise InvalidInput("at most 999999 terminals and 99999999 wallets")
        for name in ("clones", "tears", "outages"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InvalidInput(f"--{name} is a fraction between 0 and 1")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def terminal_ids(opts: FleetOptions) -> list[str]:
    """Counters FC000001..., then gates FG000001... (8-character terminal ids)."""
    counters = opts.terminals - opts.gates
    return [f"FC{i:06d}" for i in range(1, counters + 1)] + [f"FG{i:06d}" for i in range(1, opts.gates + 1)]


def is_gate(terminal_id: str) -> bool:
    return terminal_id.startswith("FG")


def wallet_id(base: int, wallet: int) -> str:
    """The wallet id of wallet number ``wallet`` in a run whose ids start at ``base`` (drawn at random per run):
    consecutive, so the shards' wallets never collide (random ids would: 100,000 of them in 10^11 collide once in
    twenty runs)."""
    body = WALLET_PREFIX + f"{(base + wallet) % 10 ** (15 - len(WALLET_PREFIX)):0{15 - len(WALLET_PREFIX)}d}"
    return body + luhn_digit(body)


def card_id(wallet: int) -> str:
    """The card of wallet number ``wallet`` (0-based); its clone, if any, is :func:`clone_card_id`."""
    return f"c{wallet + 1:08d}"


def clone_card_id(wallet: int) -> str:
    return f"c{wallet + 1 + 100_000_000:09d}"


def shard_wallets(opts: FleetOptions, shard: int) -> range:
    """The wallets (numbers) shard ``shard`` owns."""
    return range(shard, opts.wallets, opts.shards)


def shard_terminals(opts: FleetOptions, shard: int) -> list[tuple[int, str]]:
    """The terminals (position, id) shard ``shard`` owns."""
    return [(i, t) for i, t in enumerate(terminal_ids(opts)) if i % opts.shards == shard]


def cloned(opts: FleetOptions, wallet: int) -> bool:
    """Whether wallet number ``wallet`` has a clone (the first ``clones`` fraction of them)."""
    return wallet < round(opts.clones * opts.wallets)


def _names(key: str, **fields: Any) -> dict[str, str]:
    return {"zh": tr(key, "zh-CN", **fields), "en": tr(key, "en", **fields)}


def write_config(opts: FleetOptions, path: Path, operator_url: str) -> None:
    """The fleet's merchants.yaml: shops of counters and scenic spots of gates, caps high enough that the taps of a
    run are decided by the cards and the fraud checks, not by the offline count."""
    tids = terminal_ids(opts)
    merchants: list[dict[str, Any]] = []
    for kind, group in (("counter", [t for t in tids if not is_gate(t)]), ("gate", [t for t in tids if is_gate(t)])):
        for start in range(0, len(group), TERMINALS_PER_MERCHANT):
            n = len(merchants) + 1
            m: dict[str, Any] = {
                "id": f"9{n:014d}", "name": _names("fleet.merchant", n=n),
                "category": "shop" if kind == "counter" else "scenic_spot",
                "terminals": [{"id": t, "kind": kind} for t in group[start:start + TERMINALS_PER_MERCHANT]]}
            if kind == "gate":
                m["tickets"] = [{"sku": "adult", "name": _names("fleet.ticket"),
                                 "price": f"{GATE_PRICE_FEN // 100}.{GATE_PRICE_FEN % 100:02d}"}]
                m["gate"] = {"daily_capacity": 10_000_000, "passback_window_s": 0}
            merchants.append(m)
    config = {"language": "en",
              "operator": {"name": _names("fleet.operator"), "url": operator_url, "fee_bps": 0},
              "risk": {"offline_single_max": "500.00", "offline_cumulative_max": "100000000.00",
                       "offline_count_max": 65535, "tap_timeout_s": 5, "recovery_timeout_s": 1},
              "merchants": merchants}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))


@dataclass(frozen=True, slots=True)
class Tap:
    """One tap: its number, day, terminal, wallet, amount; whether the clone taps instead of the original card and
    whether the card leaves the field mid-PAY (then comes back: a customer asked to tap again)."""

    index: int
    day: int
    terminal: int
    wallet: int
    amount_fen: int
    use_clone: bool
    tear: bool


def taps(opts: FleetOptions) -> Iterator[Tap]:
    """Every tap of the run, in order, from the seed: a terminal, then a wallet of the terminal's shard. A cloned
    wallet's taps alternate between the original and the clone, so both spend the same counters at different
    terminals."""
    rng = random.Random(opts.seed)
    seen: dict[int, int] = {}
    n_clone = round(opts.clones * opts.wallets)
    per_day = -(-opts.taps // opts.days) if opts.taps else 1
    shards = opts.shards
    in_shard = [len(shard_wallets(opts, s)) for s in range(shards)]
    for i in range(opts.taps):
        terminal = rng.randrange(opts.terminals)
        shard = terminal % shards
        wallet = rng.randrange(in_shard[shard]) * shards + shard
        amount = rng.choice(AMOUNTS_FEN)
        tear = rng.random() < opts.tears
        use_clone = False
        if wallet < n_clone:
            k = seen.get(wallet, 0)
            seen[wallet] = k + 1
            use_clone = k % 2 == 1
        yield Tap(i, i // per_day, terminal, wallet, amount, use_clone, tear)

"""The operator's storage: one SQLAlchemy Core schema for SQLite (embedded default) and PostgreSQL.

Exactly-once settlement is the database's job, not the application's: ``vouchers`` has a unique
(wallet_id, counter), ``refunds`` a unique refund id, ``denylist`` a unique version, ``nonces`` a unique
(terminal_id, nonce). Every settlement batch is one transaction; a unique violation from a concurrent worker rolls
the batch back and it is judged again. On SQLite, write transactions start with ``BEGIN IMMEDIATE`` so two
processes sharing the file serialize instead of failing at commit; reads (:func:`read_only`) start deferred, so they
never wait for a writer.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)

metadata = MetaData()

terminals = Table(
    "terminals", metadata,
    Column("terminal_id", String(8), primary_key=True),
    Column("merchant_id", String(15), nullable=False),
    Column("cert_der", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),  # active | revoked
    Column("created_ms", BigInteger, nullable=False),
)

wallets = Table(
    "wallets", metadata,
    Column("wallet_id", String(16), primary_key=True),
    Column("tier", Integer, nullable=False),
    Column("cert_der", LargeBinary),
    Column("loaded_fen", BigInteger),  # opening balance + confirmed loads; NULL: not known to the operator
    Column("spent_fen", BigInteger, nullable=False, default=0),  # settled offline spending
    Column("online_fen", BigInteger, nullable=False, default=0),  # the online balance (refunds land here)
    Column("load_counter", Integer, nullable=False, default=0),
    Column("status", String(16), nullable=False),  # active | revoked
    Column("revoked_reason", String(32)),
    Column("created_ms", BigInteger, nullable=False),
)

vouchers = Table(
    "vouchers", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("voucher_id", String(25), nullable=False, unique=True),
    Column("wallet_id", String(16), nullable=False),
    Column("counter", BigInteger, nullable=False),
    Column("body_hash", String(64), nullable=False),
    Column("voucher", LargeBinary, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("fee_fen", BigInteger, nullable=False),
    Column("refunded_fen", BigInteger, nullable=False, default=0),
    Column("merchant_id", String(15), nullable=False),
    Column("terminal_id", String(8), nullable=False),
    Column("timestamp_ms", BigInteger, nullable=False),
    Column("day", String(10), nullable=False),  # China Standard Time day of the voucher
    Column("settled_ms", BigInteger, nullable=False),
    Column("discount", Integer, nullable=False, server_default="0"),  # fen a campaign paid (gross = amount + it)
    UniqueConstraint("wallet_id", "counter", name="vouchers_one_per_counter"),
    Index("vouchers_terminal_day", "terminal_id", "day"),
    Index("vouchers_wallet_day", "wallet_id", "day"),
)

rejections = Table(
    "rejections", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("terminal_id", String(8), nullable=False),
    Column("voucher_hash", String(64), nullable=False),  # SHA-256 of the voucher bytes as uploaded
    Column("voucher_id", String(64)),
    Column("wallet_id", String(16)),
    Column("amount_fen", BigInteger, nullable=False),
    Column("reason", String(40), nullable=False),
    Column("day", String(10), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    UniqueConstraint("terminal_id", "voucher_hash", name="rejections_once"),
    Index("rejections_terminal_day", "terminal_id", "day"),
)

review_flags = Table(  # vouchers settled or rejected with a timestamp to review (see bank.timerules)
    "review_flags", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("voucher_hash", String(64), nullable=False, unique=True),
    Column("voucher_id", String(64)),
    Column("wallet_id", String(16)),
    Column("terminal_id", String(8), nullable=False),
    Column("merchant_id", String(15), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("day", String(10), nullable=False),  # the corrected day
    Column("timestamp_ms", BigInteger, nullable=False),  # as the voucher says
    Column("skew_ms", BigInteger, nullable=False),  # the terminal's clock against the operator's, at upload
    Column("outcome", String(60), nullable=False),  # settled | rejected:REASON
    Column("flag", String(40), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Index("review_flags_terminal_day", "terminal_id", "day"),
    Index("review_flags_wallet", "wallet_id"),
)

denylist = Table(
    "denylist", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("wallet_id", String(16), nullable=False),
    Column("action", String(8), nullable=False),  # add | remove
    Column("reason", String(40), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

accounts = Table(
    "accounts", metadata,
    Column("merchant_id", String(15), primary_key=True),
    Column("balance_fen", BigInteger, nullable=False),  # the corporate wallet: the sum of its movements
    Column("settled_fen", BigInteger, nullable=False),
    Column("fee_fen", BigInteger, nullable=False),
    Column("refunded_fen", BigInteger, nullable=False),
)

refunds = Table(
    "refunds", metadata,
    Column("refund_id", String(80), primary_key=True),  # the terminal's idempotency key
    Column("voucher_id", String(25), nullable=False),
    Column("terminal_id", String(8), nullable=False),
    Column("merchant_id", String(15), nullable=False),
    Column("wallet_id", String(16), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("day", String(10), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Index("refunds_terminal_day", "terminal_id", "day"),
    Index("refunds_voucher", "voucher_id"),
)

load_tokens = Table(
    "load_tokens", metadata,
    Column("wallet_id", String(16), primary_key=True),
    Column("load_counter", Integer, primary_key=True),
    Column("amount_fen", BigInteger, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    # issued: signed and handed out; confirmed: the card took it (counted in wallets.loaded_fen); cancelled: refused
    Column("status", String(16), nullable=False, server_default="confirmed"),
)

nonces = Table(
    "nonces", metadata,
    Column("terminal_id", String(8), primary_key=True),
    Column("nonce", String(64), primary_key=True),
    Column("time_ms", BigInteger, nullable=False),
    Index("nonces_time", "time_ms"),
)

# -- the online balance, tickets sold online, red packets (see bank/tickets.py, bank/redpackets.py) -------------------
online_credits = Table(  # top-ups of wallets' online balances, once per credit id
    "online_credits", metadata,
    Column("credit_id", String(40), primary_key=True),
    Column("wallet_id", String(16), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

ticket_orders = Table(
    "ticket_orders", metadata,
    Column("order_id", String(40), primary_key=True),
    Column("merchant_id", String(15), nullable=False),
    Column("wallet_id", String(16), nullable=False),
    Column("sku", String(32), nullable=False),
    Column("day", String(10), nullable=False),  # the visit day
    Column("quantity", Integer, nullable=False),
    Column("unit_fen", BigInteger, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # sold | refunded
    Column("used", Integer, nullable=False, default=0),  # entries reported by all gates
    Column("flag", String(24)),  # overused | used_after_refund
    Column("version", BigInteger, nullable=False, unique=True),  # the last change (gates sync from a version)
    Column("created_ms", BigInteger, nullable=False),
    Column("refunded_ms", BigInteger),
    Index("ticket_orders_merchant_version", "merchant_id", "version"),
    Index("ticket_orders_wallet_day", "wallet_id", "day"),
)

ticket_uses = Table(  # entries on an order, per gate (a running total the gate reports at sync)
    "ticket_uses", metadata,
    Column("order_id", String(40), primary_key=True),
    Column("terminal_id", String(8), primary_key=True),
    Column("used", Integer, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

ticket_gate_sales = Table(  # tickets a gate sold itself on a day (a running total reported at sync)
    "ticket_gate_sales", metadata,
    Column("terminal_id", String(8), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("merchant_id", String(15), nullable=False),
    Column("sold", Integer, nullable=False),
)

ticket_days = Table(  # a spot's day: tickets sold online (not refunded) and reported sold at its gates
    "ticket_days", metadata,
    Column("merchant_id", String(15), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("online_sold", Integer, nullable=False),
    Column("gate_sold", Integer, nullable=False),
)

red_packets = Table(
    "red_packets", metadata,
    Column("packet_id", String(48), primary_key=True),
    Column("grant_id", String(40), nullable=False),
    Column("wallet_id", String(16), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("funder", String(15), nullable=False),  # operator | a merchant id
    Column("expires", String(10), nullable=False),  # the last day it can be received
    Column("load_counter", Integer),  # the load token carrying it (its status says received or not)
    Column("created_ms", BigInteger, nullable=False),
    UniqueConstraint("grant_id", "wallet_id", name="red_packets_one_per_wallet"),
    Index("red_packets_wallet", "wallet_id"),
)

# -- instant discounts (消费立减金): campaigns, the terminals' offline shares, the claims judged (bank.campaigns) --
campaigns = Table(
    "campaigns", metadata,
    Column("campaign_id", String(32), primary_key=True),
    Column("name_zh", String(64), nullable=False),
    Column("name_en", String(64), nullable=False),
    Column("funded_by", String(15), nullable=False),  # operator | the funding merchant's id
    Column("discount_fen", BigInteger, nullable=False),
    Column("min_amount_fen", BigInteger, nullable=False),
    Column("per_wallet_per_day", Integer, nullable=False),
    Column("merchants", Text, nullable=False),  # JSON list of merchant ids
    Column("start_day", String(10), nullable=False),
    Column("end_day", String(10), nullable=False),
    Column("budget_fen", BigInteger, nullable=False),
    Column("offline_share_fen", BigInteger, nullable=False),
    Column("spent_fen", BigInteger, nullable=False),  # paid claims
    Column("created_ms", BigInteger, nullable=False),
)

campaign_shares = Table(  # the share of a campaign's budget a terminal holds since its last sync
    "campaign_shares", metadata,
    Column("campaign_id", String(32), primary_key=True),
    Column("terminal_id", String(8), primary_key=True),
    Column("granted_fen", BigInteger, nullable=False),
    Column("claimed_fen", BigInteger, nullable=False),  # paid claims of this terminal since the grant
    Column("grants", Integer, nullable=False),
    Column("granted_ms", BigInteger, nullable=False),
)

campaign_claims = Table(
    "campaign_claims", metadata,
    Column("voucher_id", String(25), primary_key=True),
    Column("campaign_id", String(32), nullable=False),
    Column("terminal_id", String(8), nullable=False),
    Column("merchant_id", String(15), nullable=False),
    Column("wallet_id", String(16), nullable=False),
    Column("day", String(10), nullable=False),  # the voucher's day
    Column("gross_fen", BigInteger, nullable=False),
    Column("discount_fen", BigInteger, nullable=False),
    Column("status", String(8), nullable=False),  # paid | refused
    Column("reason", String(40)),  # why refused
    Column("flag", String(40)),  # repeat_wallet_day
    Column("created_ms", BigInteger, nullable=False),
    Index("campaign_claims_wallet_day", "campaign_id", "wallet_id", "day"),
    Index("campaign_claims_terminal_day", "terminal_id", "day"),
)


# -- corporate wallets and chains (bank.accounts, bank.chains, bank.statements) --------------------------------------
movements = Table(  # every change of a corporate wallet's balance (accounts.balance_fen is their sum)
    "movements", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("merchant_id", String(15), nullable=False),
    Column("kind", String(16), nullable=False),  # payment | refund | sweep_out | sweep_in | another credit's kind
    Column("reference", String(80), nullable=False),  # what moved it: first voucher id, refund id, sweep, order id
    Column("terminal_id", String(8)),
    Column("counterparty", String(15)),  # a sweep's other wallet
    Column("amount_fen", BigInteger, nullable=False),  # signed: + into the wallet, - out of it
    Column("day", String(10), nullable=False),  # the operator's business day it counts on (a sweep: the swept day)
    Column("created_ms", BigInteger, nullable=False),
    Column("sweep_day", String(10)),  # a pooling store's movement: the day of the sweep that moved it on
    UniqueConstraint("merchant_id", "kind", "reference", name="movements_once"),
    Index("movements_merchant_day", "merchant_id", "day"),
)

sweeps = Table(  # one per pooling store and business day: its day net moved to the parent's wallet, exactly once
    "sweeps", metadata,
    Column("store_id", String(15), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("parent_id", String(15), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("movements", Integer, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Index("sweeps_parent_day", "parent_id", "day"),
)


READ_ONLY = "ecny_read_only"


def read_only(engine: Engine) -> Connection:
    """A connection for reading only. On SQLite its transactions begin deferred (WAL readers see a snapshot and do
    not wait for the writer); every other transaction begins ``IMMEDIATE``, so writers queue for the lock up front
    instead of failing at commit."""
    return engine.connect().execution_options(**{READ_ONLY: True})


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``) with the schema created."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               **kwargs)

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite's implicit BEGIN is too late)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # a read (see read_only) is a plain deferred transaction: a snapshot that never waits for a writer
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")
    else:
        engine = create_engine(url, pool_pre_ping=True, **kwargs)
    metadata.create_all(engine)
    _add_missing_columns(engine)
    return engine


def _add_missing_columns(engine: Engine) -> None:
    """Columns added since a database was created (tables are created whole; a column added later is not)."""
    from sqlalchemy import inspect

    have = {c["name"] for c in inspect(engine).get_columns("load_tokens")}
    if "status" not in have:  # before load confirmations: every token issued was counted as loaded
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE load_tokens ADD COLUMN status VARCHAR(16) NOT NULL DEFAULT 'confirmed'")
    if "discount" not in {c["name"] for c in inspect(engine).get_columns("vouchers")}:  # before campaigns
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE vouchers ADD COLUMN discount INTEGER NOT NULL DEFAULT 0")


# -- reconciliation (bank.reconcile): what terminals report they could not settle, replaced at each report ---------
unresolved_reports = Table(
    "unresolved_reports", metadata,
    Column("terminal_id", String(8), primary_key=True),
    Column("intent_seq", BigInteger, primary_key=True),
    Column("merchant_id", String(15), nullable=False),
    Column("state", String(16), nullable=False),  # unresolved | open
    Column("wallet_id", String(16)),
    Column("counter", BigInteger),
    Column("amount_fen", BigInteger, nullable=False),
    Column("challenge", String(32), nullable=False),
    Column("problem", String(200), nullable=False),
    Column("created", String(40), nullable=False),  # when the charge started, the terminal's clock
    Column("reported_ms", BigInteger, nullable=False),
    Index("unresolved_reports_wallet", "wallet_id", "counter"),
)

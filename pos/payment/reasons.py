"""Decline reason codes, each with a message and a next step in Chinese and English."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from wallet import apdu as sw


@dataclass(frozen=True, slots=True)
class ReasonText:
    zh: str
    en: str
    next_zh: str
    next_en: str


class Reason(StrEnum):
    """Why a tap was declined. The value is the stable code used in JSON, ledgers and the operator API."""

    INSUFFICIENT_BALANCE = "insufficient_balance"
    OVER_SINGLE_LIMIT = "over_single_limit"
    OVER_DAILY_LIMIT = "over_daily_limit"
    OVER_OFFLINE_LIMIT = "over_offline_limit"
    OVER_BALANCE_LIMIT = "over_balance_limit"
    EXPIRED_CERTIFICATE = "expired_certificate"
    CERTIFICATE_NOT_YET_VALID = "certificate_not_yet_valid"
    UNKNOWN_ISSUER = "unknown_issuer"
    BAD_CERTIFICATE = "bad_certificate"
    DENYLISTED = "denylisted"
    CARD_BLOCKED = "card_blocked"
    BAD_SIGNATURE = "bad_signature"
    VOUCHER_MISMATCH = "voucher_mismatch"
    REPLAYED_COUNTER = "replayed_counter"
    CARD_REMOVED = "card_removed"
    NOT_A_WALLET = "not_a_wallet"
    CARD_ERROR = "card_error"
    NO_CARD = "no_card"
    MULTIPLE_CARDS = "multiple_cards"
    CANCELLED = "cancelled"
    TERMINAL_ERROR = "terminal_error"

    @property
    def text(self) -> ReasonText:
        return TEXTS[self]

    def message(self, lang: str = "en") -> str:
        t = TEXTS[self]
        return t.zh if lang.startswith("zh") else t.en

    def next_step(self, lang: str = "en") -> str:
        t = TEXTS[self]
        return t.next_zh if lang.startswith("zh") else t.next_en


R = Reason
TEXTS: dict[Reason, ReasonText] = {
    R.INSUFFICIENT_BALANCE: ReasonText("余额不足", "insufficient balance", "请换一个钱包或充值",
                                       "ask for another wallet"),
    R.OVER_SINGLE_LIMIT: ReasonText("超过单笔支付限额", "over the single-payment limit", "请分笔或换钱包支付",
                                    "split the payment or use another wallet"),
    R.OVER_DAILY_LIMIT: ReasonText("超过当日支付限额", "over the daily limit", "请明日再付或换钱包",
                                   "pay tomorrow or use another wallet"),
    R.OVER_OFFLINE_LIMIT: ReasonText("超过离线支付额度", "over the offline payment allowance",
                                     "请联网同步钱包后再付", "sync or top up the wallet online, then tap again"),
    R.OVER_BALANCE_LIMIT: ReasonText("超过钱包余额上限", "over the wallet balance cap", "请减少充值金额",
                                     "load a smaller amount"),
    R.EXPIRED_CERTIFICATE: ReasonText("钱包证书已过期", "wallet certificate expired", "请联系运营机构更新钱包",
                                      "ask the wallet operator to renew the wallet"),
    R.CERTIFICATE_NOT_YET_VALID: ReasonText("钱包证书尚未生效", "wallet certificate not yet valid",
                                            "请检查终端时间", "check the terminal clock"),
    R.UNKNOWN_ISSUER: ReasonText("钱包发行方不受信任", "wallet issuer not trusted", "请换一个钱包",
                                 "ask for another wallet"),
    R.BAD_CERTIFICATE: ReasonText("钱包证书无效", "wallet certificate invalid", "请换一个钱包",
                                  "ask for another wallet"),
    R.DENYLISTED: ReasonText("钱包已被停用", "wallet is on the denylist", "请换一个钱包并联系运营机构",
                             "ask for another wallet; the holder should contact the operator"),
    R.CARD_BLOCKED: ReasonText("钱包已锁定", "wallet is blocked", "请换一个钱包", "ask for another wallet"),
    R.BAD_SIGNATURE: ReasonText("支付凭证签名无效", "payment signature invalid", "请重新碰一碰或换钱包",
                                "tap again or use another wallet"),
    R.VOUCHER_MISMATCH: ReasonText("支付凭证与订单不符", "payment voucher does not match the order",
                                   "请重新碰一碰或换钱包", "tap again or use another wallet"),
    R.REPLAYED_COUNTER: ReasonText("交易序号重复，疑似复制卡", "transaction counter reused: possible cloned card",
                                   "请换一个钱包并联系运营机构", "ask for another wallet; report the card"),
    R.CARD_REMOVED: ReasonText("钱包过早移开", "wallet removed too early", "请将同一钱包再碰一次",
                                "tap the same wallet again and hold it until the beep"),
    R.NOT_A_WALLET: ReasonText("不是数字人民币钱包", "not an e-CNY wallet", "请使用数字人民币硬钱包",
                               "tap an e-CNY hardware wallet"),
    R.CARD_ERROR: ReasonText("钱包响应异常", "the wallet answered with an error", "请重新碰一碰",
                             "tap again"),
    R.NO_CARD: ReasonText("未检测到钱包", "no wallet tapped in time", "请重新发起收款", "start the charge again"),
    R.MULTIPLE_CARDS: ReasonText("检测到多个钱包", "more than one wallet in the field", "请只碰一个钱包",
                                 "tap one wallet at a time"),
    R.CANCELLED: ReasonText("收款已取消", "charge cancelled", "", ""),
    R.TERMINAL_ERROR: ReasonText("终端故障", "terminal error", "请联系管理员", "call the supervisor"),
}

CARD_SW_REASONS: dict[int, Reason] = {
    sw.SW_INSUFFICIENT_BALANCE: R.INSUFFICIENT_BALANCE,
    sw.SW_OVER_SINGLE_LIMIT: R.OVER_SINGLE_LIMIT,
    sw.SW_OVER_DAILY_LIMIT: R.OVER_DAILY_LIMIT,
    sw.SW_OVER_OFFLINE_LIMIT: R.OVER_OFFLINE_LIMIT,
    sw.SW_OVER_BALANCE_LIMIT: R.OVER_BALANCE_LIMIT,
    sw.SW_AUTH_METHOD_BLOCKED: R.CARD_BLOCKED,
    sw.SW_FILE_NOT_FOUND: R.NOT_A_WALLET,
}


def reason_for_status(status: int) -> Reason:
    """The decline reason for a card status word."""
    return CARD_SW_REASONS.get(status, R.CARD_ERROR)

"""The translation layer: every user-facing string of the terminal UIs, in Chinese (zh-CN) and English.

``tr(key, lang, **fields)`` looks a key up and fills ``{fields}``. Decline reasons keep their texts in
:mod:`pos.payment.reasons`; this table holds everything else the screens say. A missing key raises ``KeyError`` (a test
checks that every key used exists in both languages with the same fields).
"""

from __future__ import annotations

import locale
import os
from typing import Any

LANGUAGES = ("zh-CN", "en")

TEXTS: dict[str, tuple[str, str]] = {
    # keys (footer labels)
    "key.charge": ("收款", "charge"),
    "key.clear": ("清除", "clear"),
    "key.cart": ("商品", "items"),
    "key.tester": ("测试", "tester"),
    "key.language": ("English", "中文"),
    "key.history": ("记录", "history"),
    "key.sync": ("同步", "sync"),
    "key.report": ("日结", "day end"),
    "key.cancel": ("取消", "cancel"),
    "key.next_sale": ("下一笔", "next sale"),
    "key.receipt": ("小票", "receipt"),
    "key.back": ("返回", "back"),
    "key.print": ("打印到文件", "print to file"),
    "key.open": ("打开", "open"),
    "key.filter": ("筛选", "filter"),
    "key.refund": ("退款", "refund"),
    "key.tap": ("碰卡", "tap"),
    "key.fault": ("故障", "fault"),
    "key.fault_n": ("参数", "fault N"),
    "key.trace": ("APDU记录", "APDU trace"),
    "key.close": ("关闭", "close"),
    "key.product": ("票种", "ticket"),
    "key.quantity": ("数量", "quantity"),
    # status bar
    "bar.online": ("在线", "online"),
    "bar.offline": ("离线", "offline"),
    "bar.pending": ("待结算 {n} 笔 {amount}", "pending {n} · {amount}"),
    "bar.never": ("从未", "never"),
    "bar.last_sync": ("上次同步 {time}", "last sync {time}"),
    "bar.denylist": ("黑名单 v{v}", "denylist v{v}"),
    "sync.running": ("正在同步…", "syncing…"),
    "sync.progress": ("同步中 {done}/{total}", "syncing {done}/{total}"),
    "sync.done": ("同步完成：上传 {sent}，已结算 {settled}，拒绝 {rejected}",
                  "sync done: sent {sent}, settled {settled}, rejected {rejected}"),
    "sync.failed": ("同步失败", "sync failed"),
    "operator.unavailable": ("运营机构不可用，交易已离线保存", "operator not available; payments are kept offline"),
    # counter
    "counter.amount": ("收款金额（元）", "Amount (yuan)"),
    "counter.catalog": ("商品目录", "Catalog"),
    "counter.hint_empty": ("输入金额或选择商品，回车收款", "Type an amount or pick items; Enter charges"),
    "counter.hint_typed": ("回车收款，退格删除，Esc 清除", "Enter charges, Backspace deletes, Esc clears"),
    "counter.hint_cart": ("购物车 {n} 件，回车收款", "Cart: {n} items; Enter charges"),
    "counter.cart_total": ("合计 {amount}", "Total {amount}"),
    "counter.cart_empty": ("↑↓ 选择，+ 加入，- 减少", "↑↓ choose, + add, - remove"),
    "counter.no_amount": ("请先输入金额或选择商品", "Type an amount or pick items first"),
    # charge
    "charge.tap": ("请碰一碰", "Tap the wallet"),
    "charge.tap_hint": ("将数字人民币硬钱包靠近读卡区", "Hold the e-CNY hardware wallet to the reader"),
    "charge.countdown": ("剩余 {s} 秒 · Esc 取消", "{s} s left · Esc cancels"),
    "charge.cancelling": ("正在取消…", "cancelling…"),
    "charge.cancelled": ("收款已取消", "Charge cancelled"),
    # result
    "result.approved": ("支付成功", "APPROVED"),
    "result.declined": ("支付失败", "DECLINED"),
    "result.amount": ("金额", "Amount"),
    "result.wallet": ("钱包", "Wallet"),
    "result.balance": ("余额", "Balance after"),
    "result.voucher": ("凭证号", "Voucher"),
    "result.recovered": ("已补记", "Recovered"),
    "result.next": ("下一步：{step}", "Next: {step}"),
    "result.retap_same": ("请将同一钱包再碰一次以完成", "tap the same wallet again to finish"),
    # receipts
    "receipt.title": ("数字人民币支付小票", "e-CNY payment receipt"),
    "receipt.merchant": ("商户号", "Merchant"),
    "receipt.terminal": ("终端号", "Terminal"),
    "receipt.time": ("时间", "Time"),
    "receipt.amount": ("金额", "Amount"),
    "receipt.wallet": ("钱包", "Wallet"),
    "receipt.voucher": ("凭证号", "Voucher"),
    "receipt.status": ("结算状态", "Settlement"),
    "receipt.fee": ("手续费", "Fee"),
    "receipt.refunded": ("已退款", "Refunded"),
    "receipt.thanks": ("谢谢惠顾", "Thank you"),
    "receipt.missing": ("找不到凭证 {voucher}", "no payment {voucher} in this terminal's ledger"),
    "receipt.saved": ("小票已保存到 {path}", "receipt saved to {path}"),
    "status.pending": ("待结算（离线）", "pending offline"),
    "status.settled": ("已结算", "settled"),
    "status.rejected": ("已拒绝", "rejected"),
    # history
    "history.title": ("今日交易 · 筛选：{filter}", "Today's transactions · filter: {filter}"),
    "history.search": ("搜索凭证号、钱包或金额", "search voucher, wallet or amount"),
    "history.time": ("时间", "Time"),
    "history.amount": ("金额", "Amount"),
    "history.wallet": ("钱包", "Wallet"),
    "history.status": ("状态", "Status"),
    "history.voucher": ("凭证号", "Voucher"),
    "filter.all": ("全部", "all"),
    "filter.pending": ("待结算", "pending"),
    "filter.settled": ("已结算", "settled"),
    "filter.rejected": ("已拒绝", "rejected"),
    "refund.title": ("退款 {voucher}，最多 {amount}", "Refund {voucher}, at most {amount}"),
    "refund.hint": ("输入退款金额（元），回车确认，Esc 取消", "Amount in yuan; Enter confirms, Esc cancels"),
    "refund.too_much": ("退款金额超过可退金额", "more than can be refunded"),
    "refund.sending": ("正在提交退款…", "sending the refund…"),
    "refund.failed": ("退款失败", "refund failed"),
    "refund.result": ("退款 {amount}：{status}", "refund {amount}: {status}"),
    # report
    "report.title": ("日结报表 {day} · 终端 {terminal}", "End of day {day} · terminal {terminal}"),
    "report.all": ("全部交易", "All payments"),
    "report.refunded": ("退款", "Refunded"),
    "report.unresolved": ("未决交易", "Unresolved"),
    "report.open_intents": ("待补记", "Torn, open"),
    "report.reconciliation": ("对账", "Reconciliation"),
    "report.matched": ("一致", "matched"),
    "report.mismatch": ("不一致", "MISMATCH"),
    "report.operator": ("运营机构", "Operator"),
    "report.waiting": ("正在向运营机构对账…", "asking the operator…"),
    # tester panel
    "tester.title": ("测试面板 · 模拟卡 · 终端 {terminal}", "Tester panel · mock cards · terminal {terminal}"),
    "tester.card": ("卡", "Card"),
    "tester.wallet": ("钱包", "Wallet"),
    "tester.tier": ("等级", "Tier"),
    "tester.balance": ("余额", "Balance"),
    "tester.counter": ("计数", "Count"),
    "tester.state": ("状态", "Status"),
    "tester.active": ("正常", "active"),
    "tester.blocked": ("已锁定", "blocked"),
    "tester.clone_of": ("克隆自{card}", "clone of {card}"),
    "tester.next_fault": ("下一次碰卡的故障", "Fault for the next tap"),
    "tester.armed": ("终端正在等待碰卡：选择一张卡按回车", "The terminal is waiting: pick a card, press Enter"),
    "tester.not_armed": ("终端未在收款：请先发起收款", "The terminal is not waiting for a tap: start a charge"),
    "tester.no_mock": ("此终端使用真实读卡器，无法模拟碰卡", "This terminal uses a real reader: no mock taps"),
    "tester.tapping": ("{card} 已放到读卡区…", "{card} is in the field…"),
    "tester.tap_failed": ("{card}：{error}", "{card}: {error}"),
    "fault.none": ("无", "none"),
    "fault.tear": ("第 {n} 条指令后移开钱包", "pull the card after APDU {n}"),
    "fault.corrupt": ("损坏第 {n} 条应答", "corrupt response {n}"),
    "fault.slow": ("慢卡（每条指令 +{s} 秒）", "slow card (+{s} s per APDU)"),
    "fault.clone": ("用此卡的克隆卡碰", "tap a fresh clone of this card"),
    "fault.clone_keyless": ("用无密钥的复制卡碰（仅复制卡号与证书）", "tap a copy without the key (id, certificate)"),
    "trace.title": ("上一次碰卡的 APDU 记录（{n} 条）", "APDU trace of the last tap ({n} exchanges)"),
    "trace.empty": ("还没有碰卡", "no tap yet"),
    "trace.no_answer": ("（无应答：钱包已离开）", "(no answer: the card left the field)"),
    # gate
    "gate.products": ("票种", "Tickets"),
    "gate.quantity": ("数量 {n}", "Quantity {n}"),
    "gate.to_pay": ("应付 {amount}", "to pay {amount}"),
    "gate.tap": ("请碰一碰 入园", "Tap the wallet to enter"),
    "gate.stats": ("今日入园 {entries} 人 · 剩余名额 {remaining}", "Entries today {entries} · places left {remaining}"),
    "gate.open": ("通行", "OPEN — please enter"),
    "gate.stop": ("禁止通行", "STOP — no entry"),
    "gate.paid": ("已购票 {n} 张，请通行", "{n} ticket(s) paid: please enter"),
    "gate.prepaid": ("已用票 {used}/{tickets}，请通行", "ticket {used} of {tickets}: please enter"),
    "gate.passback": ("该钱包 {minutes} 分钟内已入园（票已用 {used}/{tickets}）",
                      "this wallet already entered within {minutes} min ({used} of {tickets} tickets used)"),
    "gate.passback_next": ("每人一票：请为同行者另行购票", "one ticket per person: buy a ticket for each visitor"),
    "gate.capacity": ("今日游客已满", "today's visitor capacity is reached"),
    "gate.capacity_next": ("请改日再来", "please come another day"),
    "gate.walk_through": ("请通过闸机", "walk through the gate"),
}


def normalize(lang: str | None) -> str:
    """``zh``, ``zh_CN.UTF-8``, ``zh-CN`` -> ``zh-CN``; anything else -> ``en``."""
    return "zh-CN" if lang and lang.lower().replace("_", "-").startswith("zh") else "en"


def other_language(lang: str) -> str:
    return "en" if normalize(lang) == "zh-CN" else "zh-CN"


def tr(key: str, lang: str, **fields: Any) -> str:
    """The text for ``key`` in ``lang`` with ``fields`` filled in."""
    zh, en = TEXTS[key]
    text = zh if normalize(lang) == "zh-CN" else en
    return text.format(**fields) if fields else text


def default_language(configured: str | None = None) -> str:
    """``POS_LANG``, else the configured language (merchants.yaml), else the locale."""
    env = os.environ.get("POS_LANG")
    if env:
        return normalize(env)
    if configured:
        return normalize(configured)
    return normalize(locale.getlocale()[0] or os.environ.get("LANG"))

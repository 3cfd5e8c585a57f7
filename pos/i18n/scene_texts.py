"""The texts of the terminal's clock, of payments kept after a storage failure (and quitting with some), of a
tester's tap that reached no decision, and of the pilot's other scenes (tickets sold online, instant discounts):
``key: (zh-CN, en)``, part of :data:`pos.i18n.texts.TEXTS`."""

from __future__ import annotations

SCENE_TEXTS: dict[str, tuple[str, str]] = {
    # -- terminal clock (learnt from the operator at each sync; see pos/sync/clockskew.py) --
    "clock.ahead_h": ("时钟快 {n} 小时：请校时", "clock {n} h ahead: set the time"),
    "clock.behind_h": ("时钟慢 {n} 小时：请校时", "clock {n} h behind: set the time"),
    "clock.ahead_min": ("时钟快 {n} 分钟：请校时", "clock {n} min ahead: set the time"),
    "clock.behind_min": ("时钟慢 {n} 分钟：请校时", "clock {n} min behind: set the time"),
    "bar.clock_stop": ("时钟错误，已停止离线收款", "clock wrong: offline sales stopped"),
    "reason.clock_skew": ("终端时钟错误：请校时后同步", "the terminal's clock is wrong: set the time, then sync"),
    "reason.clock_skew.next": ("请校准终端时间，然后按 F5 同步", "set the terminal's time, then sync (F5)"),
    "report.flagged": ("待复核时间戳 {n} 笔", "{n} vouchers with a timestamp to review"),
    # -- payments the disk refused after the card paid, kept until written (pos/payment/unwritten.py) --
    "outcome.kept": ("钱包已扣款，但终端无法写入这笔付款（磁盘已满？）：付款已保留，腾出空间后自动写入账本",
                     "the wallet was charged, but the terminal could not write the payment (disk full?): it is "
                     "kept and written to the ledger as soon as space is freed"),
    "outcome.kept_cli": ("钱包已扣款，但无法写入这笔付款（磁盘已满？）：卡内交易记录保存着它。请腾出磁盘空间，"
                         "再将同一钱包在本终端碰一次即可记入账本",
                         "the wallet was charged, but the payment could not be written (disk full?): the card's "
                         "transaction log keeps it. Free some disk space, then tap the same wallet at this terminal "
                         "again to record it"),
    "result.kept": ("已扣款 · 待写入账本", "CHARGED · NOT WRITTEN YET"),
    "result.kept_next": ("请腾出终端磁盘空间，或联系技术支持。顾客无需再次付款",
                         "free space on the terminal's disk, or call support. The customer must not pay again"),
    "bar.kept": ("{n} 笔付款待写入 {amount}：请腾出磁盘空间", "{n} not written {amount}: free disk space"),
    "gate.kept_next": ("请腾出终端磁盘空间或联系技术支持；写入后游客再碰一次即可凭已付门票入园，无需再付",
                       "free space on the terminal's disk or call support; once it is written the visitor taps "
                       "again and enters on the tickets paid, without paying again"),
    "kept.written": ("存储故障时保留的付款 {voucher}（{amount}）已写入账本",
                     "the payment {voucher} ({amount}) kept after the storage failure is now in the ledger"),
    # -- Ctrl+Q while payments are kept (pos/ui/quit.py) --
    "quit.kept_title": ("⚠ 尚有 {n} 笔已扣款的付款未写入账本，共 {amount}",
                        "⚠ Not written to the ledger yet: {n} paid · {amount}"),
    "quit.kept_body": ("卡已付款，但终端磁盘拒绝了写入。现在退出，每笔付款只有在同一钱包再次于本终端碰卡时"
                       "才会记入账本；顾客若不再来，商户的钱就只留在卡内交易记录里",
                       "Each was charged to the customer's wallet, but the terminal's disk refused to record it. Quit "
                       "now and a payment is recorded only when its wallet taps at this terminal again: a customer who "
                       "never comes back leaves the merchant's money on the card's log"),
    "quit.kept_todo": ("请腾出磁盘空间，然后按 F5 写入（或等待下次同步），再退出",
                       "Free disk space, then press F5 to write (or wait for the next sync), then quit"),
    "quit.kept_hint": ("Enter 或 Ctrl+Q 仍然退出 · F5 立即写入 · Esc 留下",
                       "Enter or Ctrl+Q quits anyway · F5 writes now · Esc stays"),
    "quit.kept_still": ("仍未写入：磁盘仍拒绝写入", "Still not written: the disk still refuses"),
    # -- a tap from the tester panel that reached no decision (pos/ui/tester/screens.py) --
    "tester.refused_not_waiting": ("{card} 未碰卡：终端 {terminal} 未在等待碰卡。请先发起收款（输入金额，按回车）",
                                   "{card} not tapped: terminal {terminal} is not waiting for a tap. Open a charge "
                                   "first (amount, Enter)"),
    "tester.refused_no_decision": ("{card}：终端 {terminal} 在 {s} 秒内没有给出结果，请查看终端屏幕",
                                   "{card}: terminal {terminal} gave no decision within {s} s: look at its screen"),
    "tester.refused_stopped": ("{card} 未扣款：终端 {terminal} 在读卡前已停止等待（收款已取消或超时）。"
                               "请重新发起收款再碰",
                               "{card} not charged: terminal {terminal} stopped waiting before it read the card "
                               "(charge cancelled or timed out). Open a charge and tap again"),
    "tester.card_busy": ("{card} 正在另一次碰卡中（例如另一个窗口的 pos card tap）：等它结束再碰",
                         "{card} is held in another tap (e.g. pos card tap from another shell): tap again once it "
                         "ends"),
    # -- tickets sold online, checked at the gate (t15a; docs/tickets.md) --
    "gate.online": ("网络购票 已用 {used}/{tickets}，请通行", "online ticket {used} of {tickets}: please enter"),
    "gate.unseen": ("闸机上次同步（{time}）后购买的门票暂无法核验：请现场购票或等待联网",
                    "ticket bought after the gate's last sync ({time}): buy at the gate or wait for the connection"),
    "gate.unseen_next": ("{minutes} 分钟内再碰一次即现场购票", "tap again within {minutes} min to buy at the gate"),
    "eod.online_tickets": ("网络购票入园", "Online tickets used"),
    "eod.online_tickets_value": ("{entries} 人次（{orders} 单）", "entries {entries} · orders {orders}"),
    # -- instant discounts (消费立减金; pos/payment/discounts.py, docs/campaigns.md) --
    "discount.line": ("立减 {discount} · 实付 {net}", "instant discount {discount} · to pay {net}"),
    "discount.note": ("立减 {discount} · 原价 {gross} · 实付 {net}",
                      "instant discount {discount} · gross {gross} · paid {net}"),
    "result.discount": ("立减", "Instant discount"),
    "result.discount_value": ("-{discount} · 原价 {gross}", "-{discount} · gross {gross}"),
    "receipt.gross": ("原价", "Gross"),
    "receipt.discount": ("立减", "Instant discount"),
    "receipt.campaign": ("活动", "Campaign"),
    "eod.discounts": ("消费立减", "Instant discounts"),
    "eod.discounts_note": ("立减部分由活动在结算时补给商户", "the campaign pays the merchant these at settlement"),
    "eod.discounts_refused": ("立减未获补贴", "Discounts refused"),
    "eod.discounts_refused_note": ("运营机构拒付：商户只收到实付金额", "refused by the operator: the merchant "
                                   "keeps only what the card paid"),
}

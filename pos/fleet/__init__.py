"""The fleet simulator (``pos fleet run``): many terminals, many wallets, many taps, then the books.

It issues the wallets into the home's card store, provisions the terminals with the operator, plays the taps
offline across the terminals (counters and gates, tears, clones spent at two terminals), syncs every terminal
concurrently (some through an operator outage) and checks that every approved payment was settled exactly once,
every clone was caught and every terminal's report matches the operator's. Everything goes through the project's
real paths: the card store, :class:`~pos.payment.session.PaymentSession` and the ticket gate through the mock
reader, :func:`~pos.sync.upload.sync_once`, the operator over HTTP.

:mod:`pos.fleet.plan` what is played, :mod:`pos.fleet.play` a shard of terminals playing its taps,
:mod:`pos.fleet.books` syncing and checking, :mod:`pos.fleet.run` the whole run.
"""

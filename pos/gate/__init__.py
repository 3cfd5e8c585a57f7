"""The scenic-spot ticket gate: ticket sales, passes, capacity and anti-passback."""

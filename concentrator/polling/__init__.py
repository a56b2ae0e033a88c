"""Talking to the meters: the bus workers (RS-485 and carrier), the slot schedulers and
the freeze backfill, meter health, the actions a command runs on a meter (relay, time),
the wildcard bus scan and the CLI's direct reads.

It owns the buses: anything else that needs one (the control socket, a signed
command) asks `Polling` for a turn, ahead of the polls.
"""

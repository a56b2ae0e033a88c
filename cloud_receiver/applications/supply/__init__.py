"""One supply state per meter (`.state`): the reasons that keep a relay open, the one
rule that decides when it may close, and every relay command prepayment, demand
response and operators' orders send."""

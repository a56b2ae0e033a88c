"""What the three command lines (`concentrator`, `cloud-receiver`, `hil-sim`) share:
option definitions and the parsing rules behind them, so a flag means the same thing,
is checked the same way and is documented once, whichever program takes it.

It holds no domain logic and imports nothing of ours but `contract` (an import-linter
contract keeps it so).
"""

"""What the three command lines (`concentrator`, `cloud-receiver`, `hil-sim`) share:
option definitions and the parsing rules behind them, so a flag means the same thing,
is checked the same way and is documented once, whichever program takes it (`options`);
and what they print: ``--json`` results and errors (`output`), tables (`table`) and
times (`timefmt`), one rule each for all three (docs/output.md).

It holds no domain logic and imports nothing of ours but `contract` (an import-linter
contract keeps it so).
"""

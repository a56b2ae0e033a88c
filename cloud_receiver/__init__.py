"""The utility side: MQTT ingest, verification, idempotent storage, acks and queries.

Layers, each importing only those below it (an import-linter contract): `cli` (the
``cloud-receiver`` command line), `applications` (billing, demand response, analytics,
fleet), `ingest` (verify, decrypt, dedup, ack) and `storage` (the database). `errors`
is the one error root; `public` is what the simulator and benchmarks may use.
"""

"""Ingest: MQTT in, verify, decrypt, store exactly once, then ack.

Owns the per-message pipeline (`.ingestor`: topic and header checks, authenticated
decryption, the exactly-once store, quarantine, the sealed ack), the payload keys
(`.keys`) and the MQTT service around it (`.service`: the shared subscription, the
ack and command publishing, chunk requests). What a stored batch *means* — prepaid
charges, command outcomes, upgrade progress — is not decided here: the utility's
applications plug in through `.hooks` (`cloud_receiver.applications.reactions`).
"""

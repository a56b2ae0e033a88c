"""The utility side: MQTT ingest, verification, idempotent storage, acks and queries."""

"""The way out: the MQTT uplink that drains the outbox, and the cellular link under it.

Owns the session with the broker (sealed batches, the receiver's acks, the ``cmd`` and
``pkg`` subscriptions it hands on) and the modem supervisor that resets a module whose
link died. It reads the store through the writer and knows nothing of the meters.
"""

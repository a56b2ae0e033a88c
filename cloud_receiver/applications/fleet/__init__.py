"""The deployment's fleet: its PKI and payload keys (`.pki`), the broker's configuration
(`.broker`) and a private broker for tests and demos (`.local_broker`), the meter
archive (`.archive`), signed downlink commands (`.commands`), and software releases
with their staged rollouts (`.rollout`)."""

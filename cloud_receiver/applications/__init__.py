"""The utility's applications on the stored data.

Owns billing (`.prepay`: prepaid accounts, charging, disconnection and reconnection),
demand response (`.dr`), the analytics (`.analytics`: energy, usage, line loss,
suspects, tamper evidence, forecasts, plots), the fleet (`.fleet`: PKI, broker
configuration, a local broker, the meter archive, downlink commands, releases and
rollouts), and how they react to the ingest's traffic (`.reactions`). Each works on
`cloud_receiver.storage`; none knows MQTT or the command line.
"""

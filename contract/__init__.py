"""The contract between the two ends: what a concentrator and the cloud receiver must
agree on, and nothing else.

Neither end owns it; both import it. Changing anything here changes what travels
between the field and the utility, so each module says which rule keeps old and new
software talking:

- `contract.records`: a reading and an event, as both ends pass them around;
- `contract.wire`: the uplink batch and its ack, byte for byte;
- `contract.commands`: a signed downlink command;
- `contract.package`: a signed release package and its chunk messages;
- `contract.topics`: every MQTT topic name, one function each;
- `contract.mqtt_session`: how both ends open their MQTT session;
- `contract.timezone`: how a site's UTC offset is written;
- `contract.quantities`: the canonical names of what meters measure (docs/quantities.md).

It may import `drivers` at most (an import-linter contract keeps it so).
"""

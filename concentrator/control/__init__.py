"""Being told what to do: the local control socket the field CLI talks to (protocol,
server, client, the log ring behind `concentrator logs`), the runner of the utility's
signed commands, and the read-success figures `concentrator stats` shows.

Everything here acts through the narrow views it is given (the polling side, the store
writer, the uplink), never through the daemon.
"""

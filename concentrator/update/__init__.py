"""Software updates: the A/B release directory, the updater inside the daemon (offer,
resumable download, install beside the running release) and the guard process that
switches to a new release and rolls it back when it does not prove itself.
"""

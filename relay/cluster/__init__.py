"""A fleet of relay nodes sharing one call directory in Redis (``RELAY_REDIS_URL``).

:mod:`.directory` is the directory (client secrets, each call's owner, each node's
load); :mod:`.node` is this node's part in it (its heartbeat, the owner of a call, the
other nodes to gather from). Forwarding itself is :mod:`relay.shards`'s, the same for a
sibling shard (a Unix socket) and another node (its base URL)."""

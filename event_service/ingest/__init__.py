"""What talks to FreeSWITCH and writes its state to Redis: the event socket, the node
workers, typed events, the pure transitions, the state writes, reconcile and the leases."""

"""The event service's gRPC API: the read/watch servicer and call control."""

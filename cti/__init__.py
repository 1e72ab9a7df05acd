"""Shared by both services: configuration, the Redis key schema, logging, protobuf stubs."""

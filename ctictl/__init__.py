"""Operator CLI over the directory gRPC API."""

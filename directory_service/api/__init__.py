"""The directory gRPC API: servicer, messages, errors, store (reads and writes)."""

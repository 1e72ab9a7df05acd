"""Helpers for clients of the CTI gRPC APIs: :func:`connect` opens a channel that sends the
bearer token (TLS optional); :func:`read_error` turns a failed call into its code, stable
``reason`` and field violations."""

from cti.client.channel import connect
from cti.client.errors import ErrorDetails, FieldViolation, read_error

__all__ = ["ErrorDetails", "FieldViolation", "connect", "read_error"]

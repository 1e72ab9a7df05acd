"""Shared by both services: configuration, the Redis key schema, logging.

``cti.v1`` (the generated contracts) and ``cti.client`` come from the ``cti-api``
distribution (clients/python), installed beside this package: extending ``__path__``
lets them resolve even when this package is imported from the source tree."""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

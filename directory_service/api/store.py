"""Directory reads and writes in Redis, in the seed's layout.

- Extensions: hash ``cti_exten@<domain>``, field = id, value = the seed's JSON (one
  parser/serializer: :mod:`cti.directory_entry`). Reads always parse the stored
  value, so an entry written by hand (``redis-cli HSET``) is read like any other.
- Derived, same cluster slot as the domain's hash: the alias index
  ``{cti_exten@<domain>}:aliases`` (lower-cased alias -> id) and template usage counts
  ``{cti_exten@<domain>}:template-refs``. Only API writes maintain them. An index entry is
  trusted only after checking that the extension it names still has that alias, so a stale
  entry never blocks a write; an alias written by hand is not indexed, so a collision with
  it is not detected until the entry is rewritten through the API.
- Templates ``cti_template``, domain settings ``cti_domain`` (name -> JSON).

Every write is one ``WATCH``/``MULTI``/``EXEC`` transaction over one hash slot, retried on
``WatchError`` (a concurrent writer), sent bracketed as :mod:`directory_service.api.write_plan`
describes. Checks that involve another slot (does the template exist, does the domain still
have extensions) are read just before the transaction and are not atomic with it; see the
README for the narrow races that leaves.
"""

from __future__ import annotations

from directory_service.api.extension_store import ExtensionStore
from directory_service.api.settings_store import SettingsStore


class DirectoryStore(ExtensionStore, SettingsStore):
    """All directory reads and writes of the API. Thread-safe (redis-py pools). Its parts:
    :mod:`~directory_service.api.extension_store`,
    :mod:`~directory_service.api.settings_store`, and what they share,
    :mod:`~directory_service.api.stored`."""

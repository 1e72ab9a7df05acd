"""``python -m event_service [--config PATH]``."""

from event_service.app import main

raise SystemExit(main())

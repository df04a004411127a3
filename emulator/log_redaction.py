"""Secrets never reach the server's logs.

uvicorn's access log prints every request target with its query string, and the read API
accepts `secret_key` as a query parameter: its value is redacted there as in the journal.
"""

from __future__ import annotations

import logging

from emulator.control.journal import redact_parameters

ACCESS_LOGGER = "uvicorn.access"


class RedactSecrets(logging.Filter):
    """Redacts `secret_key` values in the request target of uvicorn's access log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn logs '%s - "%s %s HTTP/%s" %d' with (client, method, target, version, status).
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, question, query = args[2].partition("?")
            if question:
                record.args = (*args[:2], f"{path}?{redact_parameters(query)}", *args[3:])
        return True


_FILTER = RedactSecrets()


def install() -> None:
    """Add the filter to uvicorn's access logger (once, however many servers start)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)

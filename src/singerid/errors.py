"""The root of every error singerid raises for a user's input: a file, a folder, a config, a request.

Each subclass names the file (or the request) and the reason in its message. Callers that face users (the CLI,
the HTTP service, the batch jobs) catch `SingerIdError` alone: anything else is a bug and is reported as one (a
traceback, a 500), never disguised as bad input.
"""

from __future__ import annotations


class SingerIdError(Exception):
    """An input singerid cannot use; ``str(error)`` names it and says why."""


class SignalError(SingerIdError, ValueError):
    """A signal the front end cannot use (silent, too little voice, an instrumental track)."""

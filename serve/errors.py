"""The one error a request handler raises for its user (the app shows it as a dialog, ``gr.Error``), and the
one check of an architecture name that every request makes."""
from __future__ import annotations

from architectures import check_name


class RequestError(ValueError):
    """Something about this request (the upload, the architecture, a setting) that the user can fix.

    ``title`` heads the dialog; the message says what is wrong and what to do.
    """

    def __init__(self, message: str, title: str | None = None):
        super().__init__(message)
        self.title = title


def known_architecture(name) -> str:
    """``name`` when the registry knows it; else ``RequestError`` "Unknown architecture", listing the known ones.
    Every request checks its name here before the name reaches a path, a cache key or the Hub."""
    try:
        return check_name(name)
    except ValueError as error:
        raise RequestError(str(error), title="Unknown architecture") from None

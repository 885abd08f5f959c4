"""The one error a request handler raises for its user: the app shows it as a dialog (``gr.Error``)."""
from __future__ import annotations


class RequestError(ValueError):
    """Something about this request (the upload, the architecture, a setting) that the user can fix.

    ``title`` heads the dialog; the message says what is wrong and what to do.
    """

    def __init__(self, message: str, title: str | None = None):
        super().__init__(message)
        self.title = title

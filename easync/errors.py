"""Exceptions shared by the protocol side and the stores."""


class Unavailable(Exception):
    """A store, directory or CRM cannot answer now (→ HTTP 503 with Retry-After).

    Never a reason to answer 401: that makes a phone ask its user for the password.
    """

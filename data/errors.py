"""The one exception the data pipeline raises for a user's mistake."""


class DataError(ValueError):
    """Bad or missing data; the message names the problem and the fix, on one line."""

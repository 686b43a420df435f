"""Reading finished runs and measuring what their position embeddings do: compare.py's parts."""


class CompareError(ValueError):
    """A run folder that cannot be compared; the message says why and what to do."""

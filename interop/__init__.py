"""Other formats: Hugging Face LLaMA folders (both ways) and llama2.c's .bin files."""


class ExportError(ValueError):
    """A model or folder that cannot be converted; the message says why and what to do."""

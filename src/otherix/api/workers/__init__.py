"""Background loops run inside the API process (see ``Workers``)."""

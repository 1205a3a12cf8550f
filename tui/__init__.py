"""The Textual chat: a thin front end over :mod:`assistant.chat` (``kassist chat``)."""

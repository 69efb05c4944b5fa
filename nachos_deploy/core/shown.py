"""A value as an error message shows it: the user's own text, never the whole of a huge one (a
deploy file can hold a megabyte in one value, and a message that repeats it is no message)."""

from __future__ import annotations


def shortened(value: object, limit: int = 40) -> str:
    """``value`` as text, cut after ``limit`` characters with the full length said."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def given(message: str, value: object) -> str:
    """ " (got X)" to follow ``message``, or nothing when the message shows the value already or
    it is a mapping or a list (its own keys' errors name what is wrong in it)."""
    shown = repr(value)
    if isinstance(value, dict | list) or shown in message:
        return ""
    return f" (got {shortened(shown, 80)})"

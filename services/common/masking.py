"""Masking of personal data for logs, events and reports.

The architecture asks that ID numbers and phone numbers appear only masked
outside the owning service's encrypted storage (e.g. ``1101**********002X``).
"""
from __future__ import annotations


def mask_id_number(value: str) -> str:
    """Keep the first four and last four characters of a resident ID number."""
    if len(value) <= 8:
        return "*" * len(value)
    return value[:4] + "*" * (len(value) - 8) + value[-4:]


def mask_phone(value: str) -> str:
    """Keep the first three and last four digits of a mobile number (138****1234).

    Spaces and hyphens, which people write numbers with (``+86 138-0013-8000``),
    are dropped first: counted as characters they would shift the window and
    show a middle digit."""
    compact = value.replace(" ", "").replace("-", "")
    digits = compact[-11:] if len(compact) >= 11 else compact
    if len(digits) < 7:
        return "*" * len(digits)
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]


def mask_name(value: str) -> str:
    """Keep the family name (first character) and hide the rest (张*, 买**)."""
    chars = list(value)
    if len(chars) <= 1:
        return value
    return chars[0] + "*" * (len(chars) - 1)

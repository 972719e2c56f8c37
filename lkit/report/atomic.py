"""Atomic writes for reports: they live in lkit.core.files, shared by every stage."""

from lkit.core.files import atomic_open, write_bytes, write_text

__all__ = ["atomic_open", "write_bytes", "write_text"]

"""One error hierarchy. Every user-facing error says where, what is wrong, and what would be right.

The CLI and the pytest plugin print `LkitError`s as one message (no traceback) and exit with
`exit_code`. Anything else escaping is a bug in lkit.
"""

from __future__ import annotations

# Process exit codes CI can rely on (pytest's own: 0 ok, 1 failed, 2 interrupted, 3 internal,
# 4 usage, 5 no tests).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REGRESSION = 10
EXIT_INFRA = 11


class LkitError(Exception):
    """Base of every error lkit reports to a user."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class SpecError(LkitError):
    """A spec or expectations file is invalid (where = 'file:line', field named in the message)."""


class ImageError(LkitError):
    """An image is missing, malformed, unsafe, or its bytes do not match its digest."""


class BuildError(LkitError):
    """Assembling the root filesystem or writing an output format failed."""


class MachineError(LkitError):
    """The guest misbehaved: did not boot, a command timed out, QEMU exited early."""

    exit_code = EXIT_FAILED


class InfraError(LkitError):
    """The host lacks something: QEMU, OVMF, a tool, disk space. Not the image's fault."""

    exit_code = EXIT_INFRA

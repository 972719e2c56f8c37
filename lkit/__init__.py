"""lkit: build LinuxKit specs in process, boot every output format under QEMU, check and report."""

__version__ = "0.1.0"

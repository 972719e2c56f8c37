"""Top-level pytest configuration: lkit itself is loaded through its `pytest11` entry point.

Suites (suites/*.yml) are collected by the plugin; lkit's own tests live in tests/.
"""

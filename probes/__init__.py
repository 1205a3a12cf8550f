"""Read-only probes of the running kernel, its logs and its crash dumps.

Probes return typed evidence and never write to the kernel. This package
imports nothing else of kassist's.
"""

"""The kernel agent: the only part of kassist that writes to the kernel.

It validates recommendations against policy, ranges and invariants, applies
them with snapshot, read-back verify, journal and rollback, and audits
everything. It imports nothing else of kassist's.
"""

"""The kernel agent: the only part of kassist that writes to the kernel.

It validates recommendations against policy, ranges and invariants, applies
them with snapshot, read-back verify, journal and rollback, and audits
everything. It imports nothing else of kassist's.

=============  ==============================================================
``model``      the Recommendation contract, changes and changesets
``knobs``      the action catalogue: sysctl and sysfs kinds, read/parse/write
``limits``     built-in limits (plain data), machine caps, cross-key invariants
``policy``     the TOML policy (allow/deny globs, baseline, per-key ranges)
``validate``   every rule, each rejection naming itself in one line
``agent``      validate, apply all-or-nothing and verify, status, history
``rollback``   roll back, yield to the admin, recover what was left in flight
``core``       the agent's shared state: policy, journal, audit, lock, step hook
``journal``    the SQLite WAL journal;  ``audit``: the JSON-lines audit log
``files``      the agent's own files, and the space reserved beside them
``persist``    ``/etc/sysctl.d/90-kassist.conf`` on request
``protocol``   the queue protocol;  ``server``: the daemon;  ``client``: its client
=============  ==============================================================
"""

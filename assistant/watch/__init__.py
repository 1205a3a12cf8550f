"""``kassist watch``: the crash triage daemon (:mod:`assistant.watch.daemon`).

Its sources (:mod:`assistant.watch.sources`: /dev/kmsg, the journal, followed files and
pipes, pstore, kdump directories, drives), its persistent state
(:mod:`assistant.watch.state`), the work off the storing path: drafts and hooks
(:mod:`assistant.watch.background`), and its Prometheus metrics
(:mod:`assistant.watch.metrics`). ``docs/watch.md`` tells the whole story.
"""

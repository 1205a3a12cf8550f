"""Root cause: from a crash's title to the faulting instruction, the object and an assessment.

- :mod:`assistant.rootcause.code`: the ``Code:`` line decoded (iced-x86, capstone);
- :mod:`assistant.rootcause.registers`: the register dump, the fault address, poisons;
- :mod:`assistant.rootcause.fault`: the instruction related to both, from the log alone;
- :mod:`assistant.rootcause.assess`: actionable, trigger surface, impact class;
- :mod:`assistant.rootcause.explain`: ``kassist vmcore explain`` over drgn's facts.

See docs/rootcause.md.
"""

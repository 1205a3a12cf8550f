"""Documentation drafts (``kassist docs``) built from the kernel's own sources, every part cited."""

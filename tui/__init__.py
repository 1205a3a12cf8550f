"""The Textual front end: chat, panels, approve / reject. All logic lives in the core."""

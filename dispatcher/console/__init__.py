"""The console: the engine's own web pages for the people of the offices, served at ``/``."""

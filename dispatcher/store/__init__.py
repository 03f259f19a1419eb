"""Redis, and only here: the engine's ``Store`` (``store.py``) made of one part per concern, every
key of every feature (``keys.py``), and the Lua scripts as files (``scripts/``)."""

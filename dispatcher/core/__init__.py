"""The pure core: no I/O library, no clock but what callers pass in. Models and their
validation, the five-level region tree, offices and jurisdiction, the MQTT wire contract shared
with the terminals (``wire.py``), and the one error tree (``errors.py``)."""

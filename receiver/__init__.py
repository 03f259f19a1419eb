"""The terminal side: a terminal's rules (``brain.py``, pure), the reference field receiver
(``agent.py``) and the simulator of many terminals (``simulator.py`` on ``mqtt_lite.py``).
It imports nothing of the engine but the wire contract, ``dispatcher.core.wire``."""

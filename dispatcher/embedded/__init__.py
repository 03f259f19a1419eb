"""The embedded default: private ``mosquitto`` and ``redis-server`` child processes
(``processes.py``) with the configs tuned for this workload (``configs.py``)."""

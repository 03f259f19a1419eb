"""The work behind the API, each a loop of its own: the outbox worker publishes accepted
alerts, the ingester records acks in batches, the sweeper resends and escalates. They reach
the outside world only through ``ports.py``."""

"""The dispatch engine, by stage; a request flows down this list and the acks flow back up.

    http/      HTTP in: the app's handlers, one module per resource, and the error middleware
    core/      pure: models, the region tree, auth rules, validation, the wire contract, errors
    store/     all Redis access: alerts, outbox, delivery counts, the ack log, terminals, keys
    pipeline/  the work behind the API: outbox worker, ack ingester, deadline sweeper, and the
               ports through which they reach the loudspeakers (adapters/loudspeaker) and SMS
    embedded/  the private mosquitto and redis-server of the embedded default
    cli/       the ``ebd`` command

The loose modules are the composition root: ``app.py`` (``create_app``: wiring and lifecycle,
the only place that imports every part), ``parts.py`` (its typed app keys), ``settings.py``
(TOML + ``EBD_`` variables), ``logs.py``, ``metrics.py`` (``/metrics``), ``openapi.py``.
Features live beside the engine: ``adapters/sms`` and ``drills``.
"""

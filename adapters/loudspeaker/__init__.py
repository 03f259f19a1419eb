"""The loudspeaker channel: the v1 payload (``payload.py``), the publishing link
(``publisher.py``) and the connection that takes the acks (``ack_link.py``), both configured by
one ``BrokerSession``. They implement the pipeline's ports (``dispatcher.pipeline.ports``)."""

"""Delivery channels, each the only place that speaks to its outside system:
``loudspeaker`` (MQTT to the village terminals) and ``sms`` (text-message gateways)."""

"""The SMS channel: recipients, message text and segmentation, gateway adapters, the worker."""

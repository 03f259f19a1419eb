"""The ``ebd`` command: ``main.py`` (parser), ``client.py`` (the one HTTP client), and the
commands by subject: ``serve.py``, ``data.py``, ``drills.py``, ``demo.py``."""

"""HTTP in: one module of handlers per resource, the shared request helpers
(``requests.py``), the error middleware and the typed app state the handlers read."""

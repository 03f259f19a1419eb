"""Wires the console into the engine's app: Jinja templates, static files, the page routes
and the guard of every page (sign-in, language)."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from dispatcher.console import ops, routes
from dispatcher.console.i18n import install_globals
from dispatcher.console.routes import page_guard

HERE = Path(__file__).parent


def setup_console(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        # Every value a page shows came from somewhere untrusted (alert texts, names).
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
    )
    install_globals(env)
    app[aiohttp_jinja2.static_root_key] = "/static"
    app.router.add_static("/static/", HERE / "static", name="static", append_version=True)
    app.add_routes(routes.routes)
    app.add_routes(ops.routes)
    # Innermost, so the API's error middleware still answers for what a page raises.
    app.middlewares.append(page_guard)

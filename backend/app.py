"""Application factory: `create_app()` builds the API; `python -m backend.serve` serves `backend.wsgi:app`."""

from __future__ import annotations

import logging

from flask import Flask
from flask_cors import CORS

from backend import auth, db, errors, ratelimit
from backend.config import ApiSettings
from elt.config import Settings

SECURITY_HEADERS = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"))


def create_app(settings: ApiSettings | None = None, *, elt_settings: Settings | None = None) -> Flask:
    """`elt_settings`: the landing bucket, contracts and ledger that drops go to (default: the ELT's own, from
    the environment)."""
    settings = settings or ApiSettings()
    app = Flask(__name__)
    app.config["API_SETTINGS"] = settings
    app.config["ELT_SETTINGS"] = elt_settings
    app.json.sort_keys = False
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.upload_role is not None:
        logging.getLogger(__name__).warning(
            "API_UPLOAD_ROLE is no longer read: each drop type's contract declares the role that may drop it "
            "(drop_role, revision_role in elt/contracts/*.yml); remove it from the environment")

    CORS(app, origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()], always_send=False)
    db.init_app(app, settings)
    errors.init_app(app)
    auth.init_app(app, settings.key_cache_seconds)

    from backend.api.catalogue import declared_catalogue
    from backend.api.connectors import bp as connectors_bp
    from backend.api.dbt_docs import bp as dbt_docs_bp
    from backend.api.explorer import bp as explorer_bp
    from backend.api.health import bp as health_bp
    from backend.api.listing import init_app as init_listing
    from backend.api.openapi import bp as openapi_bp
    from backend.api.uploads import bp as uploads_bp
    from backend.api.uploads import init_app as init_uploads
    from backend.api.whoami import bp as whoami_bp

    # The list endpoints, from the source families' declarations (elt/families/*.yml, `api:`); a family or resource
    # module that cannot be read stops the API here, loudly, rather than serving part of it.
    catalogue = declared_catalogue(elt_settings)
    app.extensions["catalogue"] = catalogue
    init_uploads(app, settings)
    init_listing(app, settings)
    ratelimit.init_app(app, settings, [*catalogue.blueprints, uploads_bp, whoami_bp, connectors_bp])
    for blueprint in (health_bp, *catalogue.blueprints, uploads_bp, whoami_bp, connectors_bp, openapi_bp, explorer_bp,
                      dbt_docs_bp):
        app.register_blueprint(blueprint)

    @app.after_request
    def _security_headers(response):
        headers = response.headers
        headers.extend(SECURITY_HEADERS)  # no view sets these
        if "Cache-Control" not in headers:  # the list endpoints say how their pages may be kept (backend/api/listing.py)
            headers["Cache-Control"] = "no-store"
        return response

    return app

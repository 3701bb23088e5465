"""A real OpenID Connect provider for the sign-in tests (django-oidc-provider), run in a process of
its own: `python -m tests.oidc_idp CONFIG.json`. The config names its port, database, users (with
their e-mail, password and groups) and clients (id, secret, redirect URIs)."""

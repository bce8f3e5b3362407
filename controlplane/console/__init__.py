"""The web console (`mlctl console`): what serves in production, since when, why, and how it is doing.

- settings.py: what the console reads (repository, targets, Prometheus, prediction log) and who may act;
- facts.py: every fact from the library (repository, channel state and history, replicas, canary);
- panels.py: the slower panels, loaded after the page (serving figures from Prometheus, the quality report);
- actions.py: promote, rollback and canary abort, behind an admin key and a CSRF token;
- views.py: HTML rendering (Jinja2 templates, escaped) and the small SVG chart;
- app.py: the ASGI app, its routes and its error pages.

No logic of its own beyond presentation: the facts and actions are the calls the CLI makes.
"""

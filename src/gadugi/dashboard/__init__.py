"""The local web dashboard and the self-contained HTML report.

``model`` reads the registry (read-only) into plain dicts; ``render`` turns those into HTML
and inline SVG, shared by the live pages and by ``gadugi report``; ``server`` is the
Starlette app (token, server-sent events, actions); ``actions`` runs the same commands
the command line runs. Only ``server`` imports Starlette and uvicorn, and only the
``dashboard`` command loads it, so every other command starts as fast as before.
"""

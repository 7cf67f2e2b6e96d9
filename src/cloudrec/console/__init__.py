"""The console: ``/console/``, server-rendered pages (Jinja2, htmx) to watch and run
recordings, signed in as an app or as the operator."""

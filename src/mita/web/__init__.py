"""The operator console: server-rendered pages under ``/console`` over the same services as the API.

Pages are Jinja2 templates with a little progressive enhancement (htmx for live parts, uPlot for charts), every
asset served by Mita itself (``static/``), so the console works on a utility's local network with no Internet.
Operators sign in with a name and a password (:mod:`mita.vend.operators`); each acts through an API key of their
own, so the services enforce the same roles and write the same audit entries as for the API.
"""

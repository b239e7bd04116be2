"""The pages (DESIGN §4, "Pages"): a third adapter over the service layer, beside the two APIs.

Server-rendered (Jinja2, autoescaped), a little plain JavaScript (static/app.js), every asset served
from this package (no network at run time). ``session`` signs users in and checks the form token of
every post; ``render`` draws a page; ``app.install`` mounts the routes, the static files and the
security headers. Each page module holds one area: ``actions`` (Pending Payouts, Modify Item Details),
``settings`` (Event Types, Returns Processing, Contracts), ``files`` (File Submissions).
"""

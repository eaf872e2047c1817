"""The local web UI (issue 14): pages for the household, served by the daemon on loopback.

`server.py` runs it in the daemon's nursery, `app.py` holds the pages, `auth.py` decides who may
use them, `facade.py` calls the control methods in-process, `views.py` shapes what pages show.
"""

"""Fit a task head from labelled examples (``python -m service fit``, ``POST /heads/{name}/fit``).

``probe.py`` the one probe (standardized logistic regression, C by CV), ``examples.py`` the example set
and its limits, ``rules.py`` which inputs a head reads (``--select``), ``fit.py`` from vectors to head
parameters, ``run.py`` the one path from examples to a written head (embedding through the pipeline),
``jobs.py`` the route's background jobs, ``command.py`` the command.
"""

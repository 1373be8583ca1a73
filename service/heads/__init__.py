"""Task heads: light classifiers on the served vectors (``prefixes/heads/NAME.safetensors``).

``head.py`` the head and its math, ``format.py`` the file format (parse + validate), ``writer.py`` the
one writer, ``folder.py`` the ``heads/`` folder scan, ``table.py`` which heads a snapshot serves
(availability), ``predict.py`` from vectors to the ``POST /predict`` document.
"""

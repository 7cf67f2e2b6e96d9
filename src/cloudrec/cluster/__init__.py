"""Recordings on a Ray cluster (``executor = "ray"``; docs/cluster.md).  Needs the ``cluster``
extra: ``pip install 'cloudrec[cluster]'``; nothing else in cloudrec imports Ray."""

"""The compositor: lay inputs out on an output canvas, paint frames, add watermarks.

A pure library on numpy RGB24 arrays; the recorder's worker calls it once per output frame.
"""

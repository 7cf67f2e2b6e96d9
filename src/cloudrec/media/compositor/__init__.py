"""The compositor: lay inputs out on an output canvas, paint frames, add watermarks.

A pure library on yuv420p video frames (PyAV, numpy views of their planes) and RGB24 arrays;
the recorder's mixer calls it once per output frame.
"""

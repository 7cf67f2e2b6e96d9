"""cloudrec: self-hostable cloud recording for live audio/video rooms."""

__version__ = "0.1.0"

"""irp — Image Request Predictor: does a spoken product query want to be *seen*?"""

__version__ = "0.1.0"

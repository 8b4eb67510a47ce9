"""
Wire formats: the bytes of headers and encodings vdetwist reads and writes,
as pure functions and constants with no I/O.
"""

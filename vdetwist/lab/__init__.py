"""
A network lab: link emulation (the wirefilter engine, its console).
"""

"""
C{twistd vde --web ENDPOINT}: a read-only view of a running switch: a live
page, its state as JSON and Prometheus metrics (L{vdetwist.web.status}
makes them, L{vdetwist.web.resources} serves them).
"""

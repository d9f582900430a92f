"""Results: the report that compares runs (``report``), the plots (``plots``) and the
benchmark's numbers and report (``bench``).

Imports nothing itself.
"""

"""The web dashboard: sessions, results, recommendation cards, decomposition
progress and recent audit events, updated live. See `server.py` for the routes."""

"""Accounts: what the studio keeps per user beside Django's User (their settings, a suspension) and
the record of what staff did."""

"""Helpers every app uses (throttling, API keys and their authentication, parsers, pagination).
They import nothing of the apps, so an app may import them without a tie back to the pages."""

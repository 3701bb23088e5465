"""Credits: integer balances changed only through ledger rows."""

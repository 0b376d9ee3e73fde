"""Ticket sales through Stripe (and the shared ticket ledger Telegram Stars also uses)."""

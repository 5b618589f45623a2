"""Tokens other than the session: session-bound JWTs and scoped API keys."""

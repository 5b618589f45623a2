"""Framework helpers: Starlette now; FastAPI and Flask beside it."""

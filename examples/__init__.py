"""The notes example on Starlette, FastAPI and Flask; its team files are in examples/notes/."""

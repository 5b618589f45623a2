"""The thin shells that run Bastion on each request: ASGI now, WSGI beside it."""

from bastion.middleware.asgi import BastionMiddleware

__all__ = ["BastionMiddleware"]

"""User records in an SQL database of the app's own, through SQLAlchemy 2.0 (async and sync).

Install the ``sqlalchemy`` extra. The table is the app's: put :class:`UserTable` (a mixin, like
fastapi-users' ``SQLAlchemyBaseUserTable``) on a class of the app's declarative base, so it
lives in the app's metadata and migrations::

    class Base(DeclarativeBase): ...

    class UserRecord(UserTable, Base):
        __tablename__ = "users"

    bastion = Bastion(settings, users=SQLAlchemyUserStore(async_engine, UserRecord))  # async
    bastion = Bastion(settings, users=SyncSQLAlchemyUserStore(engine, UserRecord))  # Flask

Each method is one transaction (``engine.begin()`` or ``sessionmaker.begin()``). The email
column is unique, so two sign-ups racing for one email end with one row, and the other's
unique-constraint violation becomes ``UserAlreadyExists`` (409), not a 500. A database that
cannot be reached (``OperationalError``, ``InterfaceError``) is ``ServiceUnavailable`` (503).

The queries are written once, as generators that yield SQLAlchemy statements and receive
their results; :class:`SQLAlchemyUserStore` awaits them, :class:`SyncSQLAlchemyUserStore`
runs them plainly.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any, TypeVar

from sqlalchemy import JSON, BigInteger, Boolean, String, Table, delete, insert, select, update
from sqlalchemy.engine import Engine, Result
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.sql import Executable

from bastion.errors import ServiceUnavailable, UserAlreadyExists
from bastion.users.record import User

__all__ = ["SQLAlchemyUserStore", "SyncSQLAlchemyUserStore", "UserTable"]

logger = logging.getLogger("bastion.users")

T = TypeVar("T")
Queries = Generator[Executable, Result[Any], T]


class UserTable:
    """The columns of a user table; mix it into a class of your declarative base.

    ``__tablename__`` is ``bastion_users`` unless the class sets its own. Lists and team maps
    are JSON columns; the email is unique (and indexed: log-in looks users up by it).
    """

    __tablename__ = "bastion_users"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    phone: Mapped[str] = mapped_column(String(16), default="")
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    labels: Mapped[list[str]] = mapped_column(JSON, default=list)
    teams: Mapped[dict[str, list[str]]] = mapped_column(JSON, default=dict)
    password_hash: Mapped[str] = mapped_column(String(1024), default="")
    password_history: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_ms: Mapped[int] = mapped_column(BigInteger, default=0)


def _table_of(table: Any) -> Table:
    """The ``Table`` of a mapped class (or a ``Table`` given as it is)."""
    found = getattr(table, "__table__", table)
    if not isinstance(found, Table):
        raise TypeError(f"{table!r} is neither a mapped class with UserTable's columns nor a Table")
    missing = set(_COLUMNS) - set(found.c.keys())
    if missing:
        raise TypeError(f"table {found.name!r} lacks the columns {', '.join(sorted(missing))}")
    return found


_COLUMNS = (
    "id",
    "email",
    "name",
    "phone",
    "verified",
    "labels",
    "teams",
    "password_hash",
    "password_history",
    "created_ms",
)


def _user(row: Any) -> User:
    teams = {str(k): tuple(v) for k, v in (row.teams or {}).items()}
    return User(
        row.id,
        row.email,
        row.name or "",
        row.phone or "",
        bool(row.verified),
        tuple(row.labels or ()),
        teams or None,
        row.password_hash or "",
        tuple(row.password_history or ()),
        int(row.created_ms or 0),
    )


class _Queries:
    """The store's queries, once: generators of statements, run by either store below."""

    def __init__(self, table: Any) -> None:
        self.table = _table_of(table)

    def get(self, user_id: str) -> Queries[User | None]:
        t = self.table
        result = yield select(t).where(t.c.id == user_id)
        row = result.first()
        return None if row is None else _user(row)

    def get_by_email(self, email: str) -> Queries[User | None]:
        t = self.table
        result = yield select(t).where(t.c.email == email)
        row = result.first()
        return None if row is None else _user(row)

    def create(self, user: User) -> Queries[User]:
        yield insert(self.table).values(
            id=user.id,
            email=user.email,
            name=user.name,
            phone=user.phone,
            verified=user.verified,
            labels=list(user.labels),
            teams={k: list(v) for k, v in (user.teams or {}).items()},
            password_hash=user.password_hash,
            password_history=list(user.password_history),
            created_ms=user.created_ms,
        )
        return user

    def update(
        self,
        user_id: str,
        verified: bool | None,
        labels: tuple[str, ...] | None,
        teams: dict[str, tuple[str, ...]] | None,
    ) -> Queries[User | None]:
        values: dict[str, Any] = {}
        if verified is not None:
            values["verified"] = verified
        if labels is not None:
            values["labels"] = list(labels)
        if teams is not None:
            values["teams"] = {k: list(v) for k, v in teams.items()}
        if values:
            t = self.table
            yield update(t).where(t.c.id == user_id).values(**values)
        return (yield from self.get(user_id))

    def set_password(
        self, user_id: str, password_hash: str, history: tuple[str, ...]
    ) -> Queries[None]:
        t = self.table
        yield (
            update(t)
            .where(t.c.id == user_id)
            .values(password_hash=password_hash, password_history=list(history))
        )

    def delete(self, user_id: str) -> Queries[bool]:
        t = self.table
        result = yield delete(t).where(t.c.id == user_id)
        return bool(getattr(result, "rowcount", 0))


def _unavailable(exc: Exception) -> ServiceUnavailable:
    # The exception's class only: its text may carry a query's parameters (an email).
    logger.error("user database unavailable: %s", type(exc).__name__)
    unavailable = ServiceUnavailable()
    unavailable.__cause__ = exc
    return unavailable


class SQLAlchemyUserStore:
    """A :class:`~bastion.users.UserStore` on an ``AsyncEngine`` or an ``async_sessionmaker``.

    ``table`` is a mapped class with :class:`UserTable`'s columns (or its ``Table``).
    ``sync_bind`` (an ``Engine`` or ``sessionmaker`` on the same database) adds the sync twin as
    ``.sync``, for the sync code of the same app (``bastion.sync.users``, scripts).
    """

    def __init__(
        self,
        bind: AsyncEngine | async_sessionmaker[AsyncSession],
        table: Any,
        *,
        sync_bind: Engine | sessionmaker[Session] | None = None,
    ) -> None:
        self._bind = bind
        self._queries = _Queries(table)
        self.sync = None if sync_bind is None else SyncSQLAlchemyUserStore(sync_bind, table)

    async def _run(self, queries: Queries[T]) -> T:
        try:
            async with self._bind.begin() as connection:
                try:
                    statement = next(queries)
                    while True:
                        statement = queries.send(await connection.execute(statement))
                except StopIteration as done:
                    value: T = done.value
            return value
        except IntegrityError:
            raise UserAlreadyExists() from None
        except (OperationalError, InterfaceError) as exc:
            raise _unavailable(exc) from None

    async def get(self, user_id: str) -> User | None:
        """The user with this id, or None."""
        return await self._run(self._queries.get(user_id))

    async def get_by_email(self, email: str) -> User | None:
        """The user with this (normalised) email, or None."""
        return await self._run(self._queries.get_by_email(email))

    async def create(self, user: User) -> User:
        """Insert the user; ``UserAlreadyExists`` if the email (or id) is taken."""
        return await self._run(self._queries.create(user))

    async def update(
        self,
        user_id: str,
        *,
        verified: bool | None = None,
        labels: tuple[str, ...] | None = None,
        teams: dict[str, tuple[str, ...]] | None = None,
    ) -> User | None:
        """Change the fields given; the user after, or None if none."""
        return await self._run(self._queries.update(user_id, verified, labels, teams))

    async def set_password(
        self, user_id: str, password_hash: str, history: tuple[str, ...]
    ) -> None:
        """Replace the password hash and history (no user: nothing)."""
        await self._run(self._queries.set_password(user_id, password_hash, history))

    async def delete(self, user_id: str) -> bool:
        """Delete the row; False if there was none."""
        return await self._run(self._queries.delete(user_id))


class SyncSQLAlchemyUserStore:
    """A :class:`~bastion.users.SyncUserStore` on an ``Engine`` or a ``sessionmaker``."""

    def __init__(self, bind: Engine | sessionmaker[Session], table: Any) -> None:
        self._bind = bind
        self._queries = _Queries(table)

    def _run(self, queries: Queries[T]) -> T:
        try:
            with self._bind.begin() as connection:
                try:
                    statement = next(queries)
                    while True:
                        statement = queries.send(connection.execute(statement))
                except StopIteration as done:
                    value: T = done.value
            return value
        except IntegrityError:
            raise UserAlreadyExists() from None
        except (OperationalError, InterfaceError) as exc:
            raise _unavailable(exc) from None

    def get(self, user_id: str) -> User | None:
        """The user with this id, or None."""
        return self._run(self._queries.get(user_id))

    def get_by_email(self, email: str) -> User | None:
        """The user with this (normalised) email, or None."""
        return self._run(self._queries.get_by_email(email))

    def create(self, user: User) -> User:
        """Insert the user; ``UserAlreadyExists`` if the email (or id) is taken."""
        return self._run(self._queries.create(user))

    def update(
        self,
        user_id: str,
        *,
        verified: bool | None = None,
        labels: tuple[str, ...] | None = None,
        teams: dict[str, tuple[str, ...]] | None = None,
    ) -> User | None:
        """Change the fields given; the user after, or None if none."""
        return self._run(self._queries.update(user_id, verified, labels, teams))

    def set_password(self, user_id: str, password_hash: str, history: tuple[str, ...]) -> None:
        """Replace the password hash and history (no user: nothing)."""
        self._run(self._queries.set_password(user_id, password_hash, history))

    def delete(self, user_id: str) -> bool:
        """Delete the row; False if there was none."""
        return self._run(self._queries.delete(user_id))

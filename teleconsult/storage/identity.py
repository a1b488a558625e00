"""Organisations, user accounts and refresh tokens in the index database."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, bindparam, select, update
from sqlalchemy.exc import IntegrityError

from teleconsult.domain.identity import (
    Organisation,
    Principal,
    Role,
    User,
    check_organisation_code,
    check_username,
    descendants,
)
from teleconsult.errors import ConflictError, NotFoundError
from teleconsult.security import hash_password, new_refresh_token, refresh_token_digest, verify_password
from teleconsult.storage.tables import OrganisationRow, RefreshToken, UserAccount
from teleconsult.storage.transactions import reader

__all__ = ["IdentityStore"]

_orgs = OrganisationRow.__table__
_users = UserAccount.__table__
_refresh = RefreshToken.__table__

# A fixed hash to verify against when the user does not exist, so a login
# takes as long for an unknown name as for a wrong password.
_DUMMY_HASH = hash_password("not-a-real-password")


# Organisations are only ever added (never moved or removed), so a tree read
# a few seconds ago can only miss an organisation created since: it never
# grants more than the current one. Requests reuse it for this long instead
# of reading every organisation again; ``add_organisation`` refreshes it.
_TREE_SECONDS = 5.0
# Every authenticated request reads its user: built once, its cache key with it.
_USER_BY_NAME = (
    select(
        _users.c.username,
        _users.c.role,
        _users.c.display_name,
        _users.c.disabled,
        _orgs.c.code.label("organisation"),
    )
    .select_from(_users.join(_orgs, _users.c.organisation_pk == _orgs.c.pk))
    .where(_users.c.username == bindparam("username"))
)


class IdentityStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._reader = reader(engine)
        self._tree: tuple[float, dict[str, str | None]] | None = None

    # -- organisations -------------------------------------------------------

    def add_organisation(self, code: str, name: str, parent_code: str | None = None) -> Organisation:
        code = check_organisation_code(code)
        if not name.strip():
            raise ValueError("an organisation needs a name")
        with self.engine.begin() as conn:
            parent_pk = None
            if parent_code is not None:
                parent_pk = conn.execute(select(_orgs.c.pk).where(_orgs.c.code == parent_code)).scalar()
                if parent_pk is None:
                    raise NotFoundError(f"parent organisation {parent_code} does not exist; add it first")
            try:
                conn.execute(
                    _orgs.insert().values(
                        code=code, name=name.strip(), parent_pk=parent_pk, created_at=datetime.now(UTC)
                    )
                )
            except IntegrityError as exc:
                raise ConflictError(f"organisation {code} already exists") from exc
        self._tree = None
        return Organisation(code=code, name=name.strip(), parent_code=parent_code)

    def organisations(self) -> list[Organisation]:
        with self._reader.connect() as conn:
            return _organisations(conn)

    def organisation_tree(self) -> dict[str, str | None]:
        """Organisation code -> parent code, at most ``_TREE_SECONDS`` old."""
        cached = self._tree
        if cached is not None and time.monotonic() - cached[0] < _TREE_SECONDS:
            return cached[1]
        tree = {org.code: org.parent_code for org in self.organisations()}
        self._tree = (time.monotonic(), tree)
        return tree

    # -- users ---------------------------------------------------------------

    def add_user(
        self, username: str, password: str, role: Role | str, organisation: str, display_name: str = ""
    ) -> User:
        username = check_username(username)
        role = Role(role)
        password_hash = hash_password(password)
        with self.engine.begin() as conn:
            org_pk = conn.execute(select(_orgs.c.pk).where(_orgs.c.code == organisation)).scalar()
            if org_pk is None:
                raise NotFoundError(
                    f"organisation {organisation} does not exist; add it with `teleconsult org add`"
                )
            try:
                conn.execute(
                    _users.insert().values(
                        username=username,
                        password_hash=password_hash,
                        role=role.value,
                        organisation_pk=org_pk,
                        display_name=display_name,
                        disabled=False,
                        created_at=datetime.now(UTC),
                    )
                )
            except IntegrityError as exc:
                raise ConflictError(f"user {username} already exists") from exc
        return User(username=username, role=role, organisation=organisation, display_name=display_name)

    def set_disabled(self, username: str, disabled: bool) -> None:
        with self.engine.begin() as conn:
            result = conn.execute(
                update(_users).where(_users.c.username == username).values(disabled=disabled)
            )
            if result.rowcount == 0:
                raise NotFoundError(f"user {username} does not exist")
            if disabled:
                self._revoke_all(conn, username)

    def user(self, username: str) -> User | None:
        with self._reader.connect() as conn:
            row = conn.execute(_USER_BY_NAME, {"username": username}).first()
        if row is None:
            return None
        return User(
            username=row.username,
            role=Role(row.role),
            organisation=row.organisation,
            display_name=row.display_name,
            disabled=row.disabled,
        )

    def users(self) -> list[User]:
        with self._reader.connect() as conn:
            rows = conn.execute(
                select(_users, _orgs.c.code.label("organisation"))
                .select_from(_users.join(_orgs, _users.c.organisation_pk == _orgs.c.pk))
                .order_by(_users.c.username)
            ).all()
        return [
            User(
                username=r.username,
                role=Role(r.role),
                organisation=r.organisation,
                display_name=r.display_name,
                disabled=r.disabled,
            )
            for r in rows
        ]

    def authenticate(self, username: str, password: str) -> User | None:
        with self._reader.connect() as conn:
            password_hash = conn.execute(
                select(_users.c.password_hash).where(_users.c.username == username)
            ).scalar()
        if password_hash is None:
            verify_password(_DUMMY_HASH, password)
            return None
        if not verify_password(password_hash, password):
            return None
        user = self.user(username)
        if user is None or user.disabled:
            return None
        return user

    def principal(self, username: str) -> Principal | None:
        """The caller with its current scope, or None if unknown or disabled."""
        user = self.user(username)
        if user is None or user.disabled:
            return None
        return Principal(
            username=user.username,
            role=user.role,
            organisation=user.organisation,
            visible_organisations=descendants(user.organisation, self.organisation_tree()),
        )

    # -- refresh tokens ------------------------------------------------------

    def issue_refresh_token(self, username: str, hours: int) -> str:
        token = new_refresh_token()
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            user_pk = conn.execute(select(_users.c.pk).where(_users.c.username == username)).scalar_one()
            conn.execute(
                _refresh.insert().values(
                    token_sha256=refresh_token_digest(token),
                    user_pk=user_pk,
                    expires_at=now + timedelta(hours=hours),
                    created_at=now,
                )
            )
        return token

    def use_refresh_token(self, token: str) -> User | None:
        """The token's user if the token is valid; the token is spent either way."""
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            row = conn.execute(
                select(_refresh.c.pk, _refresh.c.expires_at, _refresh.c.revoked_at, _users.c.username)
                .select_from(_refresh.join(_users, _refresh.c.user_pk == _users.c.pk))
                .where(_refresh.c.token_sha256 == refresh_token_digest(token))
                .with_for_update()
            ).first()
            if row is None or row.revoked_at is not None:
                return None
            conn.execute(update(_refresh).where(_refresh.c.pk == row.pk).values(revoked_at=now))
            expires_at = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
            if expires_at <= now:
                return None
            username = row.username
        user = self.user(username)
        return None if user is None or user.disabled else user

    def _revoke_all(self, conn: Connection, username: str) -> None:
        user_pk = select(_users.c.pk).where(_users.c.username == username).scalar_subquery()
        conn.execute(
            update(_refresh)
            .where(_refresh.c.user_pk == user_pk, _refresh.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )


def _organisations(conn: Connection) -> list[Organisation]:
    parent = _orgs.alias("parent")
    rows = conn.execute(
        select(_orgs.c.code, _orgs.c.name, parent.c.code.label("parent_code"))
        .select_from(_orgs.outerjoin(parent, _orgs.c.parent_pk == parent.c.pk))
        .order_by(_orgs.c.code)
    ).all()
    return [Organisation(code=r.code, name=r.name, parent_code=r.parent_code) for r in rows]

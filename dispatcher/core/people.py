"""People inside offices: their roles. Offices' bearer tokens stay for machines (a linked
warning-release system); a person signs in and acts in their office with the roles given."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dispatcher.core.passwords import MAX_LENGTH, MIN_LENGTH, password_problem


class Role(StrEnum):
    COMPOSER = "composer"  # drafts warnings from templates and submits them
    APPROVER = "approver"  # approves or rejects what another person submitted
    COORDINATOR = "coordinator"  # plans and runs the drills, reviews their acks
    VIEWER = "viewer"  # reads everything of their office, changes nothing
    ADMIN = "admin"  # manages the office's people and templates


ROLE_LABELS: dict[Role, tuple[str, str]] = {
    Role.COMPOSER: ("编制员", "Composer"),
    Role.APPROVER: ("审批员", "Approver"),
    Role.COORDINATOR: ("演练协调员", "Drill coordinator"),
    Role.VIEWER: ("查看员", "Viewer"),
    Role.ADMIN: ("管理员", "Administrator"),
}


@dataclass(frozen=True, slots=True)
class Person:
    id: str
    name: str
    office_id: str
    roles: frozenset[Role]
    disabled: bool = False

    def has(self, *roles: Role) -> bool:
        return any(role in self.roles for role in roles)


# Requests of the accounts API ------------------------------------------------------------------

LOGIN_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,31}$"
_LOGIN = re.compile(LOGIN_PATTERN)
NAME_MAX = 32


def login_problem(value: str) -> str | None:
    if not _LOGIN.fullmatch(value):
        return (
            "a login id is 2 to 32 characters: lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. zhang.wei)"
        )
    return None


def _login(value: str) -> str:
    problem = login_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _name(value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= NAME_MAX or not all(ch.isprintable() for ch in value):
        raise ValueError(
            f"a name is 1 to {NAME_MAX} visible characters, no control characters (e.g. 张伟)"
        )
    return value


def _password(value: str) -> str:
    problem = password_problem(value)
    if problem:
        # Never the password itself: only what is wrong with it.
        raise ValueError(problem)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PersonIn(_Strict):
    """``POST /api/v1/people``: a new person of the caller's office."""

    id: Annotated[str, Field(max_length=32, json_schema_extra={"pattern": LOGIN_PATTERN})]
    name: Annotated[str, Field(min_length=1, max_length=64)]
    roles: Annotated[list[Role], Field(min_length=1, max_length=len(Role))]
    password: Annotated[str, Field(min_length=MIN_LENGTH, max_length=MAX_LENGTH, repr=False)]
    # Optional, and only ever the caller's own office: said aloud, it is checked.
    office: Annotated[str | None, Field(max_length=64)] = None

    _check_id = field_validator("id")(_login)
    _check_name = field_validator("name")(_name)
    _check_password = field_validator("password")(_password)

    @field_validator("roles")
    @classmethod
    def _distinct(cls, roles: list[Role]) -> list[Role]:
        if len(set(roles)) != len(roles):
            raise ValueError("a role is named twice")
        return roles


class LoginIn(_Strict):
    """``POST /api/v1/session``."""

    login: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=MAX_LENGTH, repr=False)]


class PasswordIn(_Strict):
    """``POST /api/v1/people/{id}/password``: ``current`` is needed when a person changes
    their own password (an admin resetting someone else's does not know it)."""

    password: Annotated[str, Field(min_length=MIN_LENGTH, max_length=MAX_LENGTH, repr=False)]
    current: Annotated[str | None, Field(max_length=MAX_LENGTH, repr=False)] = None

    _check_password = field_validator("password")(_password)

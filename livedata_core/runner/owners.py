"""Which login publishes an account, when several instances run: the first to report it."""

from __future__ import annotations

__all__ = ["AccountOwners", "MAX_ACCOUNTS"]

MAX_ACCOUNTS = 100_000
"""Accounts remembered at most; past that (a broker reporting made-up ids), new accounts are not claimed and every
instance may publish them, so memory stays bounded."""


class AccountOwners:
    """The owner of each account id for the whole run: the login (the instance itself, or the instance whose
    login it uses) of the first instance to report it, or to configure it in ``accounts``.

    Account channels are named by the account id alone, so two logins reporting one account would write over each
    other's book; another login's data for an owned account is skipped (counted in its status). Instances of one
    login (a Schwab instance and the tos instance streaming with its login) share their accounts.
    """

    def __init__(self) -> None:
        self._owner: dict[str, tuple[str, str]] = {}  # account id -> (login, instance that claimed it)

    def claim(self, account: str, login: str, instance: str) -> str | None:
        """Claim ``account`` for ``login`` unless another login has it; return that other owner's instance name
        (``None``: ``instance`` may publish it)."""
        owner = self._owner.get(account)
        if owner is None:
            if len(self._owner) < MAX_ACCOUNTS:
                self._owner[account] = (login, instance)
            return None
        return None if owner[0] == login else owner[1]

    def owner(self, account: str) -> str | None:
        """The instance that claimed ``account``, if any."""
        owner = self._owner.get(account)
        return owner[1] if owner else None

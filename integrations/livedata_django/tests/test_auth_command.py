"""``manage.py livedata_auth schwab --user thor --manual``: the terminal login, into thor's row."""

from __future__ import annotations

import io
import sys
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from SchwabLiveData.models import SchwabToken

from thor_browser import follow_schwab


class PastingUser(io.StringIO):
    """Standard input of a user who opens the printed URL, logs in at Schwab and pastes the redirect URL."""

    def __init__(self, printed: io.StringIO, fake_schwab) -> None:
        super().__init__()
        self.printed, self.fake_schwab = printed, fake_schwab

    def readline(self, *args) -> str:
        deadline = time.monotonic() + 10
        while "/v1/oauth/authorize?" not in self.printed.getvalue():
            assert time.monotonic() < deadline, "no login URL was printed"
            time.sleep(0.01)
        url = next(w for w in self.printed.getvalue().split() if "/v1/oauth/authorize?" in w)
        back = follow_schwab(self.fake_schwab, url)
        return f"https://127.0.0.1:8182/?code={back['code'].replace('@', '%40')}&state={back['state']}\n"


def test_the_terminal_login_saves_into_the_named_users_row(make_user, fake_schwab, schwab_config, monkeypatch):
    thor = make_user("thor")
    printed = io.StringIO()
    monkeypatch.setattr(sys, "stderr", printed)
    monkeypatch.setattr(sys, "stdin", PastingUser(printed, fake_schwab))
    out = io.StringIO()
    call_command("livedata_auth", "schwab", "--user", "thor", "--manual", stdout=out)
    assert "tokens saved for 'thor' in SchwabLiveData.SchwabToken" in out.getvalue()
    assert SchwabToken.objects.get(user=thor).access_token in fake_schwab.access_tokens


def test_the_terminal_login_names_a_missing_user(make_user, schwab_config):
    with pytest.raises(CommandError, match="there is no user 'nobody'"):
        call_command("livedata_auth", "schwab", "--user", "nobody", "--manual")

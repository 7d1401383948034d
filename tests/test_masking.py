"""Secrets never leave the process: masking of URLs, key=value pairs, tokens and known values."""

from __future__ import annotations

import pytest

from sqlsentinel.masking import mask, register_secret


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        (
            "postgresql://sentinel:pa55word@127.0.0.1/db",
            "pa55word",
            "postgresql://sentinel:***@127.0.0.1/db",
        ),
        ("mysql+pymysql://root:r00t%21@127.0.0.1:3306/x failed", "r00t%21", "failed"),
        ("host=db password=hunter22 user=x", "hunter22", "user=x"),
        (
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9",
            "eyJhbGciOiJIUzI1NiJ9",
            "Authorization: Bearer ***",
        ),
        (
            "POST https://hooks.slack.com/services/T000/B000/XXXXXXXX",
            "T000/B000/XXXXXXXX",
            "hooks.slack.com/services/***",
        ),
    ],
)
def test_secrets_are_masked(text, hidden, kept):
    masked = mask(text)

    assert hidden not in masked
    assert kept in masked


def test_ordinary_words_stay_readable():
    assert mask("no basic auth credentials") == "no basic auth credentials"


def test_registered_values_are_masked_anywhere():
    register_secret("S3cret-From-Env")

    assert (
        mask("connect failed: S3cret-From-Env rejected")
        == "connect failed: *** rejected"
    )


def test_registered_values_are_masked_whatever_their_case():
    register_secret("MiXeD-Case-Token-77")

    assert (
        mask("cron field 'mixed-case-token-77' is invalid")
        == "cron field '***' is invalid"
    )

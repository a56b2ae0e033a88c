"""API tokens and the API's cursors as parsers (issue 21, item 4): whatever text a
client sends as a token or an ``after`` cursor, the answer is a token's identity or a
refusal naming the problem — never another exception."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_receiver.access import operators, tokens
from cloud_receiver.access.policy import Role
from cloud_receiver.storage import Storage, open_storage
from cloud_receiver.web import data


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    s = open_storage(f"sqlite:///{tmp_path_factory.mktemp('tok') / 'r.db'}")
    with s.transaction() as tx:
        operators.add(tx, "olga", Role.OPERATOR, "a long enough password", with_totp=False,
                      by="test", now=time.time())  # fmt: skip
    yield s
    s.close()


@given(
    secret=st.binary(min_size=32, max_size=32),
    token_id=st.text("0123456789abcdef", min_size=1, max_size=16),
)
def test_a_token_text_decodes_to_what_was_encoded(secret: bytes, token_id: str) -> None:
    assert tokens._decode(tokens._encode(token_id, secret)) == (token_id, secret)


@given(st.text(max_size=200))
@settings(max_examples=300)
def test_any_text_is_a_token_or_refused(storage: Storage, text: str) -> None:
    with storage.transaction() as tx, pytest.raises(tokens.TokenRefused) as refused:
        tokens.authenticate(tx, text, time.time(), "test")
    assert "API token" in str(refused.value)


def test_operator_tokens_sign_with_their_own_key_and_end_with_revocation(storage: Storage) -> None:
    now = time.time()
    with storage.transaction() as tx:
        found, text = tokens.create(tx, "operator", "olga", Role.VIEWER, lifetime=60, note="",
                                    by="test", now=now)  # fmt: skip
        bearer = tokens.authenticate(tx, text, now, "here")
        assert bearer.principal.label == "operator:olga" and bearer.principal.role is Role.VIEWER
        assert bearer.key is not None and bearer.principal.session == f"token-{found.id}"
        with pytest.raises(tokens.TokenRefused, match="expired"):
            tokens.authenticate(tx, text, now + 61, "here")
        with pytest.raises(tokens.TokenError, match="wider than operator olga"):
            tokens.create(tx, "operator", "olga", Role.ADMINISTRATOR, lifetime=60, note="",
                          by="test", now=now)  # fmt: skip
        with pytest.raises(tokens.TokenError, match="system token's role operator"):
            tokens.create(tx, "system", "billing", Role.OPERATOR, lifetime=60, note="",
                          by="test", now=now)  # fmt: skip
        tokens.revoke(tx, found.id, now)
        with pytest.raises(tokens.TokenRefused, match="revoked"):
            tokens.authenticate(tx, text, now, "here")
        # Its session ended with it: nothing it signed after can pass as the operator's.
        session = tx.exec_driver_sql(
            "SELECT revoked_at FROM sessions WHERE id = ?", (f"token-{found.id}",)
        ).scalar()
        assert session == now


@given(st.text(max_size=60))
def test_any_cursor_is_a_page_or_refused(storage: Storage, after: str) -> None:
    try:
        page = data.readings_page(storage, "000000000001", since=None, until=None,
                                  quantities=(), limit=10, after=after)  # fmt: skip
    except data.BadCursor as exc:
        assert repr(after)[:20] in str(exc) or "after" in str(exc)
    else:
        assert page.rows == [] and page.next is None

"""The password proof: iterated SHA-256 over password + salt, checked against known vectors."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faktory_core._auth import password_hash

VECTORS = [
    # The server's own unit test (server/server_test.go TestPasswordHashing).
    (
        "foobar",
        "55104dc76695721d",
        1545,
        "6d877f8e5544b1f2598768f817413ab8a357afffa924dedae99eb91472d4ec30",
    ),
    (
        "s3cret",
        "1f2e3d4c5b6a7988",
        4096,
        "e127e9669b12bd909b16492d0b0ba83006b5b15cabdb385f57b55fa93fe6a8ec",
    ),
    (
        "s3cret",
        "1f2e3d4c5b6a7988",
        1,
        "c8b50d16ee6412b3fd9b92a50690b49343c0ab6015e153e3d4a043db2dad9d1e",
    ),
]


@pytest.mark.parametrize(("password", "salt", "iterations", "expected"), VECTORS)
def test_vectors(password: str, salt: str, iterations: int, expected: str) -> None:
    assert password_hash(password, salt, iterations) == expected


@pytest.mark.parametrize("iterations", [0, -1, -4096])
def test_fewer_than_one_iteration_means_one(iterations: int) -> None:
    assert password_hash("s3cret", "1f2e3d4c5b6a7988", iterations) == VECTORS[2][3]


def test_one_iteration_is_one_sha256_of_the_utf8_text() -> None:
    assert password_hash("p\u00e4ss", "ab", 1) == hashlib.sha256("p\u00e4ssab".encode()).hexdigest()


@settings(deadline=None)
@given(st.text(max_size=12), st.text("0123456789abcdef", max_size=16), st.integers(1, 5))
def test_each_iteration_hashes_the_raw_digest(password: str, salt: str, iterations: int) -> None:
    digest = (password + salt).encode()
    for _ in range(iterations):
        digest = hashlib.sha256(digest).digest()
    result = password_hash(password, salt, iterations)
    assert result == digest.hex()
    assert len(result) == 64
    assert result == result.lower()
